//! Throughput of the reduction loops that every reducing collective runs
//! (`Element::combine`: `acc[i] = acc[i] op src[i]`) next to a plain memcpy of the
//! same bytes, for f32, f16 and bf16 at 64 KiB, 1 MiB and 16 MiB.
//!
//! `cargo bench --bench reduce`; criterion prints GB/s (decimal) per case.
//! Throughput is counted as the bytes of one buffer (one reduction input), the
//! same way `copy_from_slice` counts the bytes it copies.

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, SamplingMode,
    Throughput,
};
use mpinfer_collectives::{bf16, f16, Element, ReduceOp};

const SIZES: [(usize, &str); 3] = [(64 << 10, "64KiB"), (1 << 20, "1MiB"), (16 << 20, "16MiB")];

/// A buffer whose pages are all written once (`vec![x; n]` with a non-zero
/// `x` writes every element; a zero value could come from untouched pages).
fn filled<T: Element>(n: usize, v: f64) -> Vec<T> {
    assert!(v != 0.0);
    vec![T::from_f64(v); n]
}

fn configure(group: &mut BenchmarkGroup<'_, WallTime>) {
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
        // Flat sampling: the 16 MiB half-precision cases take milliseconds per
        // call, and linear sampling would overrun the measurement time.
        .sampling_mode(SamplingMode::Flat);
}

fn memcpy(c: &mut Criterion) {
    let mut group = c.benchmark_group("memcpy");
    configure(&mut group);
    for (bytes, label) in SIZES {
        let src = vec![0x5au8; bytes];
        let mut dst = vec![0xa5u8; bytes];
        group.throughput(Throughput::BytesDecimal(bytes as u64));
        group.bench_function(BenchmarkId::new("u8", label), |b| {
            b.iter(|| {
                dst.copy_from_slice(black_box(&src));
                black_box(&mut dst);
            })
        });
    }
    group.finish();
}

/// `acc[i] += src[i]`: the in-place step of reduce-scatter and tree reductions.
fn combine_one<T: Element>(group: &mut BenchmarkGroup<'_, WallTime>, name: &str) {
    for (bytes, label) in SIZES {
        let n = bytes / std::mem::size_of::<T>();
        // Adding 1.0 repeatedly saturates (the sum stops changing once 1.0 is
        // below half an ulp) well before any overflow, so no inf or subnormals.
        let mut acc = filled::<T>(n, 0.5);
        let src = filled::<T>(n, 1.0);
        group.throughput(Throughput::BytesDecimal(bytes as u64));
        group.bench_function(BenchmarkId::new(name, label), |b| {
            b.iter(|| {
                T::combine(ReduceOp::Sum, black_box(&mut acc), black_box(&src));
            })
        });
    }
}

fn combine(c: &mut Criterion) {
    let mut group = c.benchmark_group("combine_sum");
    configure(&mut group);
    combine_one::<f32>(&mut group, "f32");
    combine_one::<f16>(&mut group, "f16");
    combine_one::<bf16>(&mut group, "bf16");
    group.finish();
}

criterion_group!(benches, memcpy, combine);
criterion_main!(benches);
