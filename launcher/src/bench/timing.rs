//! Timing across ranks on a noisy machine: candidates are interleaved batch
//! by batch, each batch is charged to the slowest rank, and the median batch
//! is reported, so a drift of the machine hits every candidate alike.

use mpi::collective::{CommunicatorCollectives, SystemOperation};
use mpi::topology::SimpleCommunicator;
use std::time::Instant;

pub struct Plan {
    /// Timed batches per candidate.
    pub batches: usize,
    /// Aim for batches about this long, in seconds.
    pub batch_seconds: f64,
}

/// Median seconds per call of each candidate. `run(i)` runs candidate `i` once.
pub fn interleaved(
    world: &SimpleCommunicator,
    plan: &Plan,
    n: usize,
    mut run: impl FnMut(usize),
) -> Vec<f64> {
    // Warm up (first touches, scratch growth), then size the batches from one
    // timed call each, agreed across ranks so everyone runs the same count.
    for i in 0..n {
        run(i);
        run(i);
    }
    let mut single = vec![0f64; n];
    for (i, t) in single.iter_mut().enumerate() {
        world.barrier();
        let t0 = Instant::now();
        run(i);
        *t = t0.elapsed().as_secs_f64();
    }
    let mut slowest = vec![0f64; n];
    world.all_reduce_into(&single[..], &mut slowest[..], SystemOperation::max());
    let iters: Vec<usize> = slowest
        .iter()
        .map(|t| ((plan.batch_seconds / t.max(1e-9)).ceil() as usize).clamp(1, 20_000))
        .collect();

    let mut times = vec![0f64; n * plan.batches];
    for b in 0..plan.batches {
        for k in 0..n {
            let i = (k + b) % n;
            world.barrier();
            let t0 = Instant::now();
            for _ in 0..iters[i] {
                run(i);
            }
            times[i * plan.batches + b] = t0.elapsed().as_secs_f64() / iters[i] as f64;
        }
    }
    let mut slowest = vec![0f64; times.len()];
    world.all_reduce_into(&times[..], &mut slowest[..], SystemOperation::max());
    slowest.chunks(plan.batches).map(median).collect()
}

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}
