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
use mpinfer_kernels::Tensor;
use std::ops::Range;

const TAG_ACTIVATION: Tag = 200;
const TAG_RESULT: Tag = 201;

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

pub(crate) fn run<T: Transport>(
    ctx: &mut Ctx<'_, T>,
    input: &dyn Rows,
    outputs: &mut dyn Outputs,
) -> Result<(), RunError> {
    let rank = ctx.comm.rank();
    let stages = stages(ctx.model, ctx.comm.size())?;
    let s_count = stages.len();
    if rank >= s_count {
        log::info!("more ranks than layers: this rank holds no stage");
        return Ok(());
    }
    let my = stages[rank].clone();
    let steps: Vec<Step> = ctx.model.layers[my.clone()]
        .iter()
        .map(|l| Step::load(l, ctx.opts.dtype))
        .collect::<Result<_, _>>()?;
    let steps = fuse_relu(steps);
    ctx.weight_bytes = super::data::step_weight_bytes(&steps);

    let shapes = ctx.model.shapes(1)?;
    let sample = |end: usize| -> Vec<usize> {
        if end == 0 {
            ctx.model.sample_shape.clone()
        } else {
            shapes[end - 1][1..].to_vec()
        }
    };
    let in_sample = sample(my.start);
    let last_sample = sample(stages[s_count - 1].end);
    let total = input.rows();
    let micro = ctx
        .opts
        .batch_size
        .unwrap_or_else(|| default_micro_batch(total, s_count));
    let batches = total.div_ceil(micro);
    let rows_of = |mb: usize| micro.min(total - mb * micro);
    let valid = |mb: isize| mb >= 0 && (mb as usize) < batches;
    let with_rows = |rows: usize, s: &[usize]| -> Vec<usize> {
        std::iter::once(rows).chain(s.iter().copied()).collect()
    };

    if total == 0 && rank == 0 {
        outputs.computed(0, &Tensor::zeros(with_rows(0, &last_sample)))?;
        outputs.collected(0, &Tensor::zeros(with_rows(0, &last_sample)))?;
    }
    let mut pending: Option<Tensor> = None;
    for t in 0..(batches + s_count) as isize {
        let mb_in = t - rank as isize;
        let mut incoming: Option<Tensor> = None;
        let mut result: Option<(usize, Tensor)> = None;
        if s_count > 1 {
            let mut sends = Vec::new();
            let out_bytes;
            if let Some(y) = &pending {
                out_bytes = bytemuck::cast_slice::<f32, u8>(&y.data);
                let (peer, tag) = if rank == s_count - 1 {
                    (0, TAG_RESULT)
                } else {
                    (rank + 1, TAG_ACTIVATION)
                };
                sends.push(Outgoing {
                    peer,
                    tag,
                    data: out_bytes,
                });
            }
            let mut in_buf = Vec::new();
            if rank > 0 && valid(mb_in) {
                in_buf = vec![0f32; rows_of(mb_in as usize) * in_sample.iter().product::<usize>()];
            }
            let mb_back = t - s_count as isize;
            let mut back_buf = Vec::new();
            if rank == 0 && valid(mb_back) {
                back_buf =
                    vec![0f32; rows_of(mb_back as usize) * last_sample.iter().product::<usize>()];
            }
            let mut recvs = Vec::new();
            if rank > 0 && valid(mb_in) {
                recvs.push(Incoming {
                    peer: rank - 1,
                    tag: TAG_ACTIVATION,
                    data: bytemuck::cast_slice_mut::<f32, u8>(&mut in_buf),
                });
            }
            if rank == 0 && valid(mb_back) {
                recvs.push(Incoming {
                    peer: s_count - 1,
                    tag: TAG_RESULT,
                    data: bytemuck::cast_slice_mut::<f32, u8>(&mut back_buf),
                });
            }
            if !sends.is_empty() || !recvs.is_empty() {
                let transport = ctx.comm.transport();
                ctx.clock
                    .comm(|| transport.exchange(&sends, &mut recvs, None))?;
            }
            drop(recvs);
            if rank > 0 && valid(mb_in) {
                let rows = rows_of(mb_in as usize);
                incoming = Some(Tensor::new(with_rows(rows, &in_sample), in_buf));
            }
            if rank == 0 && valid(mb_back) {
                let mb = mb_back as usize;
                result = Some((
                    mb * micro,
                    Tensor::new(with_rows(rows_of(mb), &last_sample), back_buf),
                ));
            }
        }
        if let Some((first, y)) = result {
            outputs.computed(first, &y)?;
            outputs.collected(first, &y)?;
        }
        pending = None;
        if valid(mb_in) {
            let mb = mb_in as usize;
            let x = match incoming {
                Some(x) => x,
                None => ctx.read(input, mb * micro..mb * micro + rows_of(mb))?,
            };
            let y = ctx.clock.compute(|| forward(&steps, ctx.cpu, x))?;
            ctx.rows_done += rows_of(mb) as u64;
            if s_count == 1 {
                outputs.computed(mb * micro, &y)?;
                outputs.collected(mb * micro, &y)?;
            } else {
                pending = Some(y);
            }
        }
    }
    Ok(())
}
