//! Pipeline parallelism: rank `s` holds stage `s`, a contiguous run of
//! layers, and micro-batches stream through the stages with point-to-point
//! messages; the last stage sends results back to rank 0.
//!
//! Steps are lock-stepped: at step `t` stage `s` computes micro-batch `t - s`.
//! Each step first exchanges, in one call, the previous step's result (sent
//! on) and this step's input (received), so no stage ever waits on a send
//! while its receiver waits on it.

use super::{Ctx, Outputs, Rows, RunError};
use crate::exec::{forward, fuse_relu, Step};
use crate::model::Model;
use crate::ModelError;
use mpinfer_collectives::transport::{Incoming, Outgoing, Tag, Transport};
use mpinfer_collectives::TagRange;
use mpinfer_kernels::Tensor;
use std::ops::Range;

/// Contiguous stages, at most one per rank, that minimise the largest
/// stage's FLOPs per sample.
pub fn stages(model: &Model, ranks: usize) -> Result<Vec<Range<usize>>, ModelError> {
    let layers = model.layers.len();
    if layers == 0 {
        return Ok(std::iter::once(0..0).collect());
    }
    let shapes = model.shapes(1)?;
    let input: Vec<usize> = std::iter::once(1)
        .chain(model.sample_shape.iter().copied())
        .collect();
    // A layer without multiply-adds still costs a pass over its input.
    let cost: Vec<u64> = model
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| l.flops(if i == 0 { &input } else { &shapes[i - 1] }).max(1))
        .collect();
    let mut prefix = vec![0u64; layers + 1];
    for i in 0..layers {
        prefix[i + 1] = prefix[i] + cost[i];
    }
    let s = ranks.min(layers).max(1);
    // best[k][j]: least possible largest stage over the first j layers in k stages.
    let mut best = vec![vec![u64::MAX; layers + 1]; s + 1];
    let mut cut = vec![vec![0usize; layers + 1]; s + 1];
    best[0][0] = 0;
    for k in 1..=s {
        for j in k..=layers {
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
    let mut end = layers;
    for k in (1..=s).rev() {
        let start = cut[k][end];
        out[k - 1] = start..end;
        end = start;
    }
    Ok(out)
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
    /// Per-sample shape of this stage's input.
    in_sample: Vec<usize>,
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
        let shapes = ctx.model.shapes(1)?;
        let sample = |end: usize| -> Vec<usize> {
            if end == 0 {
                ctx.model.sample_shape.clone()
            } else {
                shapes[end - 1][1..].to_vec()
            }
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
            in_sample: sample(stages[rank].start),
            last_sample: sample(stages[stages.len() - 1].end),
            tag_activation: tags.get(0),
            tag_result: tags.get(1),
        })
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

/// This stage's layers, loaded, with ReLUs fused into the steps before.
fn load_stage<T: Transport>(
    ctx: &mut Ctx<'_, T>,
    layers: Range<usize>,
) -> Result<Vec<Step>, ModelError> {
    let steps: Vec<Step> = ctx.model.layers[layers]
        .iter()
        .map(|l| Step::load(l, ctx.opts.dtype))
        .collect::<Result<_, _>>()?;
    let steps = fuse_relu(steps);
    ctx.weight_bytes = super::data::step_weight_bytes(&steps);
    Ok(steps)
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
    let steps = load_stage(ctx, stages[rank].clone())?;
    let pipe = Pipe::new(ctx, &stages, input.rows(), &tags)?;
    if pipe.total == 0 && rank == 0 {
        outputs.computed(0, &Tensor::zeros(with_rows(0, &pipe.last_sample)))?;
        outputs.collected(0, &Tensor::zeros(with_rows(0, &pipe.last_sample)))?;
    }
    let mut pending: Option<Tensor> = None;
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
            let x = match incoming {
                Some(x) => x,
                None => ctx.read(input, pipe.rows(mb))?,
            };
            let y = ctx.clock.compute(|| forward(&steps, ctx.cpu, x))?;
            ctx.rows_done += pipe.rows_of(mb) as u64;
            if pipe.stages == 1 {
                outputs.computed(pipe.rows(mb).start, &y)?;
                outputs.collected(pipe.rows(mb).start, &y)?;
            } else {
                pending = Some(y);
            }
        }
    }
    Ok(())
}

/// What one step receives: this stage's input, and on rank 0 a finished
/// micro-batch with its first row.
type Received = (Option<Tensor>, Option<(usize, Tensor)>);

/// Step `t`'s messages, in one exchange: `pending` (the previous step's
/// output) goes to the next stage, or from the last stage to rank 0; this
/// stage's input for the step arrives from the stage before, and on rank 0
/// a finished micro-batch from the last stage.
fn exchange<T: Transport>(
    ctx: &mut Ctx<'_, T>,
    pipe: &Pipe,
    t: isize,
    pending: Option<&Tensor>,
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
            data: bytemuck::cast_slice::<f32, u8>(&y.data),
        });
    }
    let mb_in = t - rank as isize;
    let takes_input = rank > 0 && pipe.valid(mb_in);
    let mb_back = t - pipe.stages as isize;
    let takes_result = rank == 0 && pipe.valid(mb_back);
    let buffer = |takes: bool, mb: isize, sample: &[usize]| -> Vec<f32> {
        if takes {
            vec![0f32; pipe.shape(mb as usize, sample).iter().product()]
        } else {
            Vec::new()
        }
    };
    let mut in_buf = buffer(takes_input, mb_in, &pipe.in_sample);
    let mut back_buf = buffer(takes_result, mb_back, &pipe.last_sample);
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
    let incoming = takes_input.then(|| {
        let shape = pipe.shape(mb_in as usize, &pipe.in_sample);
        Tensor::new(shape, in_buf)
    });
    let result = takes_result.then(|| {
        let mb = mb_back as usize;
        let shape = pipe.shape(mb, &pipe.last_sample);
        (pipe.rows(mb).start, Tensor::new(shape, back_buf))
    });
    Ok((incoming, result))
}
