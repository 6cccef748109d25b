//! Pipeline parallelism: rank `s` holds stage `s`, a contiguous run of the
//! graph's nodes, and micro-batches stream through the stages with
//! point-to-point messages; the last stage sends results back to rank 0.
//!
//! Every value live across a cut (a skip connection as well as the main
//! path) travels to the next stage, packed one after another in one message.
//! Steps are lock-stepped: at step `t` stage `s` computes micro-batch
//! `t - s`. Each step first exchanges, in one call, the previous step's
//! result (sent on) and this step's input (received), so no stage ever waits
//! on a send while its receiver waits on it.

use super::{Ctx, Outputs, Rows, RunError};
use crate::exec::{load_program, Program};
use crate::graph::{Model, Op, Spec, ValueId};
use crate::ModelError;
use mpinfer_collectives::transport::{Incoming, Outgoing, Tag, Transport};
use mpinfer_collectives::TagRange;
use mpinfer_kernels::Tensor;
use std::ops::Range;

/// Multiply-adds ×2 of node `i` at the spec's batch; a node without any
/// still costs a pass over its output.
pub fn node_flops(model: &Model, spec: &Spec, i: usize) -> u64 {
    let node = &model.nodes[i];
    if !spec.runs[i] {
        return 0;
    }
    let out: usize = node
        .outputs
        .iter()
        .map(|&v| spec.shape(v).iter().product::<usize>())
        .sum();
    let inner = match &node.op {
        Op::Conv { .. } => node
            .input(1)
            .map_or(1, |w| spec.shape(w)[1..].iter().product()),
        Op::Gemm(g) => node.input(0).map_or(1, |a| {
            let s = spec.shape(a);
            if g.trans_a {
                s[0]
            } else {
                s[s.len() - 1]
            }
        }),
        Op::MatMul => node
            .input(0)
            .map_or(1, |a| *spec.shape(a).last().unwrap_or(&1)),
        _ => return out.max(1) as u64,
    };
    2 * (out * inner).max(1) as u64
}

/// Contiguous runs of nodes, at most one per rank, that minimise the
/// largest stage's FLOPs per sample.
pub fn stages(model: &Model, ranks: usize) -> Result<Vec<Range<usize>>, ModelError> {
    let nodes = model.nodes.len();
    if nodes == 0 {
        return Ok(std::iter::once(0..0).collect());
    }
    let spec = model.spec(1)?;
    let cost: Vec<u64> = (0..nodes).map(|i| node_flops(model, &spec, i)).collect();
    let mut prefix = vec![0u64; nodes + 1];
    for i in 0..nodes {
        prefix[i + 1] = prefix[i] + cost[i];
    }
    let s = ranks.min(nodes).max(1);
    // best[k][j]: least possible largest stage over the first j nodes in k stages.
    let mut best = vec![vec![u64::MAX; nodes + 1]; s + 1];
    let mut cut = vec![vec![0usize; nodes + 1]; s + 1];
    best[0][0] = 0;
    for k in 1..=s {
        for j in k..=nodes {
            for i in (k - 1)..j {
                if best[k - 1][i] == u64::MAX {
                    continue;
                }
                let c = best[k - 1][i].max(prefix[j] - prefix[i]);
                if c < best[k][j] {
                    best[k][j] = c;
                    cut[k][j] = i;
                }
            }
        }
    }
    let mut out = vec![0..0; s];
    let mut end = nodes;
    for k in (1..=s).rev() {
        let start = cut[k][end];
        out[k - 1] = start..end;
        end = start;
    }
    Ok(out)
}

/// The batched values live across the cut before node `at`: computed
/// before it (or the graph input) and read at or after it, or an output.
pub fn live_at(model: &Model, spec: &Spec, at: usize) -> Vec<ValueId> {
    let producers = model.producers();
    let before = |v: ValueId| v == model.input || producers[v].is_some_and(|p| p < at);
    let mut live: Vec<ValueId> = model.nodes[at..]
        .iter()
        .flat_map(|n| n.inputs.iter().flatten().copied())
        .chain(model.outputs.iter().copied())
        .filter(|&v| before(v) && spec.batched[v] && spec.known(v).is_none())
        .collect();
    live.sort_unstable();
    live.dedup();
    live
}

/// Micro-batch rows when `--batch-size` is not given: about four
/// micro-batches per stage keep the bubble near (S-1)/(M+S-1) ≈ 1/5.
fn default_micro_batch(total: usize, stages: usize) -> usize {
    total.div_ceil(4 * stages).clamp(1, 64)
}

/// The micro-batches that stream through the stages, as this rank sees
/// them.
struct Pipe {
    rank: usize,
    stages: usize,
    /// Rows per micro-batch (the last may have fewer).
    micro: usize,
    total: usize,
    batches: usize,
    /// Values this stage receives, and their values per sample.
    in_values: Vec<(ValueId, usize)>,
    /// Values this stage sends on (its program's kept values).
    out_values: Vec<ValueId>,
    /// Per-sample shape of the last stage's output.
    last_sample: Vec<usize>,
    /// Tags of activations sent stage to stage, and of results sent back to rank 0.
    tag_activation: Tag,
    tag_result: Tag,
}

impl Pipe {
    fn new<T: Transport>(
        ctx: &Ctx<'_, T>,
        stages: &[Range<usize>],
        total: usize,
        tags: &TagRange,
    ) -> Result<Pipe, ModelError> {
        let rank = ctx.comm.rank();
        let spec = ctx.spec(1)?;
        let model = ctx.model;
        let sample = |v: ValueId| spec.shape(v)[1..].to_vec();
        let in_values = live_at(model, &spec, stages[rank].start)
            .into_iter()
            .map(|v| (v, spec.shape(v).iter().product()))
            .collect();
        let out_values = if rank + 1 == stages.len() {
            model.outputs.clone()
        } else {
            live_at(model, &spec, stages[rank + 1].start)
        };
        let micro = ctx
            .opts
            .batch_size
            .unwrap_or_else(|| default_micro_batch(total, stages.len()));
        Ok(Pipe {
            rank,
            stages: stages.len(),
            micro,
            total,
            batches: total.div_ceil(micro),
            in_values,
            out_values,
            last_sample: sample(model.outputs[0]),
            tag_activation: tags.get(0),
            tag_result: tags.get(1),
        })
    }

    /// Values per sample in this stage's incoming message.
    fn in_len(&self) -> usize {
        self.in_values.iter().map(|(_, n)| n).sum()
    }

    /// The incoming message's values, unpacked with their shapes at the
    /// micro-batch's size (the batch need not lead inside a model).
    fn unpack(&self, spec: &Spec, data: Vec<f32>) -> Vec<(ValueId, Tensor)> {
        let mut at = 0;
        self.in_values
            .iter()
            .map(|(v, _)| {
                let shape = spec.shape(*v).to_vec();
                let n: usize = shape.iter().product();
                let t = Tensor::new(shape, data[at..at + n].to_vec());
                at += n;
                (*v, t)
            })
            .collect()
    }

    fn rows_of(&self, mb: usize) -> usize {
        self.micro.min(self.total - mb * self.micro)
    }

    /// Input rows of micro-batch `mb`.
    fn rows(&self, mb: usize) -> Range<usize> {
        mb * self.micro..mb * self.micro + self.rows_of(mb)
    }

    fn valid(&self, mb: isize) -> bool {
        mb >= 0 && (mb as usize) < self.batches
    }

    fn shape(&self, mb: usize, sample: &[usize]) -> Vec<usize> {
        with_rows(self.rows_of(mb), sample)
    }

    fn is_last(&self) -> bool {
        self.rank == self.stages - 1
    }
}

fn with_rows(rows: usize, sample: &[usize]) -> Vec<usize> {
    std::iter::once(rows)
        .chain(sample.iter().copied())
        .collect()
}

/// This stage's nodes, loaded.
fn load_stage<T: Transport>(
    ctx: &mut Ctx<'_, T>,
    nodes: Range<usize>,
    keep: Vec<ValueId>,
) -> Result<Program, ModelError> {
    let list: Vec<usize> = nodes.collect();
    let program = load_program(
        ctx.model,
        &*ctx.spec(1)?,
        &list,
        keep,
        ctx.opts.dtype,
        ctx.exec.cpu(),
    )?;
    ctx.weight_bytes = 4 * program.weight_values();
    Ok(program)
}

pub(crate) fn run<T: Transport>(
    ctx: &mut Ctx<'_, T>,
    input: &dyn Rows,
    outputs: &mut dyn Outputs,
) -> Result<(), RunError> {
    let rank = ctx.comm.rank();
    // Before any rank can leave: every rank reserves, in the same order.
    let tags = ctx.comm.reserve_tags(2)?;
    let stages = stages(ctx.model, ctx.comm.size())?;
    if rank >= stages.len() {
        log::info!("more ranks than layers: this rank holds no stage");
        return Ok(());
    }
    let pipe = Pipe::new(ctx, &stages, input.rows(), &tags)?;
    let program = load_stage(ctx, stages[rank].clone(), pipe.out_values.clone())?;
    if pipe.total == 0 && rank == 0 {
        outputs.computed(0, &Tensor::zeros(with_rows(0, &pipe.last_sample)))?;
        outputs.collected(0, &Tensor::zeros(with_rows(0, &pipe.last_sample)))?;
    }
    let mut pending: Option<Vec<f32>> = None;
    for t in 0..(pipe.batches + pipe.stages) as isize {
        let mb_in = t - rank as isize;
        let (incoming, result) = if pipe.stages > 1 {
            exchange(ctx, &pipe, t, pending.as_ref())?
        } else {
            (None, None)
        };
        if let Some((first, y)) = result {
            outputs.computed(first, &y)?;
            outputs.collected(first, &y)?;
        }
        pending = None;
        if pipe.valid(mb_in) {
            let mb = mb_in as usize;
            let rows = pipe.rows_of(mb);
            let spec = ctx.spec(rows)?;
            let values = match incoming {
                Some(data) => pipe.unpack(&spec, data),
                None => vec![(ctx.model.input, ctx.read(input, pipe.rows(mb))?)],
            };
            let (model, exec) = (ctx.model, ctx.exec);
            let ys = ctx.clock.compute(|| {
                exec.run(&program, model, &spec, values, &mut |_, _| {
                    unreachable!("a stage has no collectives")
                })
            })?;
            ctx.rows_done += rows as u64;
            if pipe.stages == 1 {
                let y = ys.into_iter().next().expect("one output");
                outputs.computed(pipe.rows(mb).start, &y)?;
                outputs.collected(pipe.rows(mb).start, &y)?;
            } else {
                // One message: the values one after another.
                pending = Some(ys.into_iter().flat_map(|t| t.data).collect());
            }
        }
    }
    Ok(())
}

/// What one step receives: this stage's input, and on rank 0 a finished
/// micro-batch with its first row.
type Received = (Option<Vec<f32>>, Option<(usize, Tensor)>);

/// Step `t`'s messages, in one exchange: `pending` (the previous step's
/// output) goes to the next stage, or from the last stage to rank 0; this
/// stage's input for the step arrives from the stage before, and on rank 0
/// a finished micro-batch from the last stage.
fn exchange<T: Transport>(
    ctx: &mut Ctx<'_, T>,
    pipe: &Pipe,
    t: isize,
    pending: Option<&Vec<f32>>,
) -> Result<Received, RunError> {
    let rank = pipe.rank;
    let mut sends = Vec::new();
    if let Some(y) = pending {
        let (peer, tag) = if pipe.is_last() {
            (0, pipe.tag_result)
        } else {
            (rank + 1, pipe.tag_activation)
        };
        sends.push(Outgoing {
            peer,
            tag,
            data: bytemuck::cast_slice::<f32, u8>(y),
        });
    }
    let mb_in = t - rank as isize;
    let takes_input = rank > 0 && pipe.valid(mb_in);
    let mb_back = t - pipe.stages as isize;
    let takes_result = rank == 0 && pipe.valid(mb_back);
    let buffer = |takes: bool, mb: isize, per_sample: usize| -> Vec<f32> {
        if takes {
            vec![0f32; pipe.rows_of(mb as usize) * per_sample]
        } else {
            Vec::new()
        }
    };
    let mut in_buf = buffer(takes_input, mb_in, pipe.in_len());
    let last_len = pipe.last_sample.iter().product();
    let mut back_buf = buffer(takes_result, mb_back, last_len);
    let mut recvs = Vec::new();
    if takes_input {
        recvs.push(Incoming {
            peer: rank - 1,
            tag: pipe.tag_activation,
            data: bytemuck::cast_slice_mut::<f32, u8>(&mut in_buf),
        });
    }
    if takes_result {
        recvs.push(Incoming {
            peer: pipe.stages - 1,
            tag: pipe.tag_result,
            data: bytemuck::cast_slice_mut::<f32, u8>(&mut back_buf),
        });
    }
    if !sends.is_empty() || !recvs.is_empty() {
        let transport = ctx.comm.transport();
        ctx.clock
            .comm(|| transport.exchange(&sends, &mut recvs, None))?;
    }
    drop(recvs);
    let incoming = takes_input.then_some(in_buf);
    let result = takes_result.then(|| {
        let mb = mb_back as usize;
        let shape = pipe.shape(mb, &pipe.last_sample);
        (pipe.rows(mb).start, Tensor::new(shape, back_buf))
    });
    Ok((incoming, result))
}
