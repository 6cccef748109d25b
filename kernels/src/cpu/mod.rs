//! CPU kernels. Each op checks shapes, then writes every element of its
//! output (the tests poison outputs to prove it).

mod avx512;
pub(crate) mod batched;
pub(crate) mod broadcast;
mod conv;
mod elementwise;
pub(crate) mod layout;
mod linear;
mod matmul;
mod norm;
mod pool;
pub(crate) mod reduce;
pub(crate) mod strided;
mod unary;
mod winograd;

pub use batched::batched_matmul;
pub use broadcast::{binary, binary_in_place, binary_into, broadcast_shape, Binary};
pub(crate) use conv::Dims as ConvDims;
pub use conv::{Conv2d, Epilogue};
pub use elementwise::{flatten, relu, softmax, softmax_coerced};
pub use layout::{concat, expand, gather, slice, split, transpose};
pub use linear::{Gemm, ROW_BLOCK};
pub use norm::{channel_affine, layer_norm};
pub use pool::{global_average_pool, Pool2d, PoolKind};
pub use reduce::{reduce, Reduce};
pub use unary::{erf, unary, unary_tensor, Unary};

/// Where CPU kernels run: how many threads one rank may use. Ranks sharing a
/// node should split its cores (cores ÷ ranks on the node). The threads live
/// as long as the `Cpu`: with threads spawned per layer, the seed network on
/// two threads ran at 4300 instead of 6400 images/s in three rounds of five;
/// with this pool it held 6100–6500 in all ten rounds measured.
#[derive(Clone, Debug)]
pub struct Cpu {
    pub threads: usize,
    pool: Option<std::sync::Arc<rayon::ThreadPool>>,
}

impl Cpu {
    pub fn new(threads: usize) -> Cpu {
        let threads = threads.max(1);
        let pool = (threads > 1).then(|| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("mpinfer-cpu-{i}"))
                .build()
                .expect("start the CPU kernel threads");
            std::sync::Arc::new(pool)
        });
        Cpu { threads, pool }
    }

    /// All of this machine's cores.
    pub fn all_cores() -> Cpu {
        Cpu::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// Splits `out`, a sequence of items of `item_len` values each, into one
    /// contiguous run per thread and calls `work(first_item, run)` on each, so
    /// each thread can set up its scratch once for all of its items.
    pub(crate) fn for_each_run(
        &self,
        out: &mut [f32],
        item_len: usize,
        work: impl Fn(usize, &mut [f32]) + Sync,
    ) {
        let items = out.len() / item_len.max(1);
        let per_thread = items.div_ceil(self.threads).max(1);
        let runs: Vec<(usize, &mut [f32])> = out
            .chunks_mut(per_thread * item_len.max(1))
            .enumerate()
            .map(|(i, run)| (i * per_thread, run))
            .collect();
        self.for_each(runs, |_, (first, run)| work(first, run));
    }

    /// Runs `work(i, item)` for every item, items spread over the threads in
    /// contiguous runs.
    pub(crate) fn for_each<T: Send>(&self, items: Vec<T>, work: impl Fn(usize, T) + Sync) {
        let threads = self.threads.min(items.len()).max(1);
        let Some(pool) = self.pool.as_ref().filter(|_| threads > 1) else {
            for (i, it) in items.into_iter().enumerate() {
                work(i, it);
            }
            return;
        };
        let per = items.len().div_ceil(threads);
        let mut batches: Vec<Vec<(usize, T)>> =
            (0..threads).map(|_| Vec::with_capacity(per)).collect();
        for (i, it) in items.into_iter().enumerate() {
            batches[i / per].push((i, it));
        }
        pool.scope(|s| {
            for batch in batches {
                let work = &work;
                s.spawn(move |_| {
                    for (i, it) in batch {
                        work(i, it);
                    }
                });
            }
        });
    }
}

impl Default for Cpu {
    fn default() -> Self {
        Cpu::all_cores()
    }
}
