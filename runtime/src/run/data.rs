//! Data parallelism: every rank holds the whole model and computes its share
//! of each round of rows; rank 0 gathers the outputs in input order.

use super::{Ctx, Outputs, RankWeights, Rows, RunError, Schedule};
use crate::exec::Program;
use crate::split;
use mpinfer_collectives::transport::Transport;
use mpinfer_collectives::Opts;
use mpinfer_kernels::cpu::ROW_BLOCK;
use mpinfer_kernels::Tensor;
use std::ops::Range;
use std::time::Instant;

/// Rows per rank per round when `--batch-size` is not given: large enough
/// to keep the GEMMs efficient, small enough to stream.
const DEFAULT_ROWS_PER_RANK: usize = 256;
/// Blocks of rows per rank in each round of the dynamic schedule.
const DYNAMIC_BLOCKS_PER_RANK: usize = 8;
/// Rows each rank times to measure its speed for `--rank-weights auto`.
const CALIBRATION_ROWS: usize = 16;

/// `chosen`: picked by `auto`, which may measure the ranks' speeds.
pub(crate) fn run<T: Transport>(
    ctx: &mut Ctx<'_, T>,
    input: &dyn Rows,
    outputs: &mut dyn Outputs,
    chosen: bool,
) -> Result<(), RunError> {
    let p = ctx.comm.size();
    let steps = ctx.whole_program()?;
    ctx.weight_bytes = 4 * steps.weight_values();
    let out_sample = ctx.output_sample()?;
    let total = input.rows();
    let dynamic = ctx.opts.schedule == Schedule::Dynamic && p > 1;
    let round = round_len(ctx.opts.batch_size, p, dynamic);
    let mut weights = initial_weights(ctx, &steps, input, chosen, dynamic)?;
    let mut pace = Pace::new(p);

    let mut first = 0;
    while first < total || (total == 0 && first == 0) {
        let len = round.min(total - first);
        let counts = block_counts(len, &weights);
        let rows = first..first + len;
        let (computed, took) =
            compute_round(ctx, &steps, input, outputs, &out_sample, rows, &counts)?;
        if dynamic {
            if let Some(w) = pace.share(ctx, computed, took)? {
                weights = w;
            }
        }
        if total == 0 {
            break;
        }
        first += len;
    }
    Ok(())
}

/// Rows of one round, over all ranks.
fn round_len(batch_size: Option<usize>, p: usize, dynamic: bool) -> usize {
    let per_rank = batch_size.unwrap_or(DEFAULT_ROWS_PER_RANK);
    // Rows are handed out in whole blocks of the GEMM's row block, at
    // positions fixed in the input, so each row is computed in the same
    // company however many ranks share the work and whatever their weights:
    // the output is the same to the bit.
    let round = (per_rank * p).div_ceil(ROW_BLOCK) * ROW_BLOCK;
    if dynamic {
        // Every round ends with a gather, so a round's split is only as fine
        // as its blocks: with a few per rank, a 2:1 pace still splits 1:1.
        round.max(DYNAMIC_BLOCKS_PER_RANK * ROW_BLOCK * p)
    } else {
        round
    }
}

/// The weights the first round is split by; rank 0 logs them when unequal.
fn initial_weights<T: Transport>(
    ctx: &mut Ctx<'_, T>,
    steps: &Program,
    input: &dyn Rows,
    chosen: bool,
    dynamic: bool,
) -> Result<Vec<f64>, RunError> {
    let p = ctx.comm.size();
    let weights = match &ctx.opts.rank_weights {
        // Chosen by `auto` with no weights given: measure, and keep the
        // measurement only when the ranks really differ (timing noise would
        // otherwise shift rows for nothing).
        // Dynamic: start from a measured pace rather than equal shares, so
        // that the first round is not the slowest.
        RankWeights::Equal if dynamic => calibrate(ctx, steps, input)?,
        RankWeights::Equal if chosen && p > 1 => {
            let speed = calibrate(ctx, steps, input)?;
            let (lo, hi) = speed
                .iter()
                .fold((f64::MAX, 0f64), |(lo, hi), &s| (lo.min(s), hi.max(s)));
            if hi > 1.25 * lo {
                speed
            } else {
                vec![1.0; p]
            }
        }
        RankWeights::Equal => vec![1.0; p],
        RankWeights::Listed(w) => w.clone(),
        RankWeights::Auto => calibrate(ctx, steps, input)?,
    };
    if ctx.comm.rank() == 0 && weights.iter().any(|w| (w - weights[0]).abs() > 1e-9) {
        let max = weights.iter().cloned().fold(0f64, f64::max).max(1e-12);
        let shown: Vec<String> = weights.iter().map(|w| format!("{:.2}", w / max)).collect();
        log::info!("rank weights: {}", shown.join(", "));
    }
    Ok(weights)
}

/// Each rank's rows of a round of `len`: whole row blocks by weight; only
/// the round's last block may be short.
fn block_counts(len: usize, weights: &[f64]) -> Vec<usize> {
    let blocks = split::weighted(len.div_ceil(ROW_BLOCK), weights);
    let mut left = len;
    blocks
        .iter()
        .map(|b| {
            let rows = (b * ROW_BLOCK).min(left);
            left -= rows;
            rows
        })
        .collect()
}

/// Computes this rank's share of the round of input rows `round` and
/// gathers the round's outputs on rank 0. Returns the rows this rank
/// computed and the seconds it took.
fn compute_round<T: Transport>(
    ctx: &mut Ctx<'_, T>,
    steps: &Program,
    input: &dyn Rows,
    outputs: &mut dyn Outputs,
    out_sample: &[usize],
    round: Range<usize>,
    counts: &[usize],
) -> Result<(usize, f64), RunError> {
    let first = round.start;
    let rank = ctx.comm.rank();
    let out_len: usize = out_sample.iter().product();
    let offsets = split::offsets(counts);
    let mine = first + offsets[rank]..first + offsets[rank + 1];
    let x = ctx.read(input, mine.clone())?;
    let started = Instant::now();
    // A rank with no rows this round has nothing to run.
    let y = if mine.is_empty() {
        Tensor::zeros(
            std::iter::once(0)
                .chain(out_sample.iter().copied())
                .collect(),
        )
    } else {
        ctx.forward(steps, x)?
    };
    let took = started.elapsed().as_secs_f64();
    ctx.rows_done += mine.len() as u64;
    if !mine.is_empty() {
        outputs.computed(mine.start, &y)?;
    }
    let elem_counts: Vec<usize> = counts.iter().map(|c| c * out_len).collect();
    let all = ctx.gatherv(&y.data, &elem_counts, Some(0))?;
    if rank == 0 {
        let shape = std::iter::once(round.len())
            .chain(out_sample.iter().copied())
            .collect();
        outputs.collected(first, &Tensor::new(shape, all))?;
    }
    Ok((mine.len(), took))
}

/// Rows and busy seconds of every rank, summed over the rounds so far.
struct Pace {
    done_rows: Vec<f64>,
    busy: Vec<f64>,
}

impl Pace {
    fn new(p: usize) -> Pace {
        Pace {
            done_rows: vec![0.0; p],
            busy: vec![0.0; p],
        }
    }

    /// Adds this round's figures of every rank; the weights of the next
    /// round once every rank has computed rows.
    fn share<T: Transport>(
        &mut self,
        ctx: &mut Ctx<'_, T>,
        rows: usize,
        took: f64,
    ) -> Result<Option<Vec<f64>>, RunError> {
        // Everyone learns everyone's pace, so every rank computes the
        // same split for the next round.
        let p = self.done_rows.len();
        let mut all = vec![0.0f64; 2 * p];
        let comm = ctx.comm;
        let send = [rows as f64, took];
        ctx.clock
            .comm(|| comm.allgather(&mut all, Opts::default().send(&send)))?;
        for r in 0..p {
            self.done_rows[r] += all[2 * r];
            self.busy[r] += all[2 * r + 1];
        }
        if !self.done_rows.iter().all(|&d| d > 0.0) {
            return Ok(None);
        }
        Ok(Some(
            (0..p)
                .map(|r| self.done_rows[r] / self.busy[r].max(1e-9))
                .collect(),
        ))
    }
}

/// Each rank's speed on a short batch of the real input, as rank weights.
fn calibrate<T: Transport>(
    ctx: &mut Ctx<'_, T>,
    steps: &Program,
    input: &dyn Rows,
) -> Result<Vec<f64>, RunError> {
    let p = ctx.comm.size();
    let rows = CALIBRATION_ROWS.min(input.rows());
    let mut speed = 1.0;
    if rows > 0 {
        let x = ctx.read(input, 0..rows)?;
        // The first pass warms caches and the thread pool.
        ctx.forward(steps, x.clone())?;
        let t = Instant::now();
        ctx.forward(steps, x)?;
        speed = rows as f64 / t.elapsed().as_secs_f64().max(1e-9);
    }
    let mut all = vec![0.0f64; p];
    let comm = ctx.comm;
    ctx.clock
        .comm(|| comm.allgather(&mut all, Opts::default().send(&[speed])))?;
    Ok(all)
}
