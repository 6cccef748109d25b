//! CPU kernel throughput at the seed network's shapes (batch 256) and at
//! large square GEMMs, on 1 and 2 threads. Throughput is counted in
//! floating-point operations of the direct algorithm (2·M·N·K for a GEMM,
//! 2 · outputs · C·kH·kW for a convolution, whatever the kernel does to get
//! there), so criterion's "elem/s" reads as FLOP/s. The pool counts input
//! elements read instead.
//!
//! `cargo bench --bench kernels`; `scripts/bench-kernels.sh` runs it and
//! writes the table in docs/bench/kernels.md. With `MPINFER_CPU_AVX512=0` the
//! convolutions run on the portable kernels and report as `conv2d-portable`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mpinfer_kernels::cpu::{Conv2d, Cpu, Gemm, Pool2d, PoolKind};
use mpinfer_kernels::Tensor;

const BATCH: usize = 256;

fn tensor(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    // Written values on every page, none of them special.
    Tensor::new(
        shape.to_vec(),
        (0..n).map(|i| ((i % 17) as f32 - 8.0) / 16.0).collect(),
    )
}

/// Few samples over a short time: every case here runs for milliseconds,
/// and the whole bench should take a few minutes. The first case of a run
/// read up to 30% slow after a warm-up of 0.3 s.
fn quick<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(10);
    group
}

fn conv(c: &mut Criterion) {
    let portable = std::env::var_os("MPINFER_CPU_AVX512").is_some_and(|v| v == "0");
    let mut group = quick(
        c,
        if portable {
            "conv2d-portable"
        } else {
            "conv2d"
        },
    );
    // (name, input, weight): the seed network's two convolutions.
    let cases = [
        ("seed_conv1", [BATCH, 1, 32, 32], [32, 1, 3, 3]),
        ("seed_conv2", [BATCH, 32, 30, 30], [64, 32, 3, 3]),
    ];
    for (name, xs, ws) in cases {
        let x = tensor(&xs);
        let w = tensor(&ws);
        let bias = vec![0.01; ws[0]];
        let op = Conv2d {
            relu: true,
            ..Conv2d::default()
        };
        let out = op.output_shape(&x.shape, &w.shape).unwrap();
        let flops = 2 * out.iter().product::<usize>() * ws[1] * ws[2] * ws[3];
        group.throughput(Throughput::Elements(flops as u64));
        for threads in [1, 2] {
            let cpu = Cpu::new(threads);
            let mut y = vec![0f32; out.iter().product()];
            group.bench_function(BenchmarkId::new(name, format!("{threads}t")), |b| {
                b.iter(|| {
                    op.run_into(&cpu, black_box(&x), &w, Some(&bias), &mut y)
                        .unwrap()
                })
            });
        }
    }
    group.finish();
}

fn linear(c: &mut Criterion) {
    let mut group = quick(c, "gemm");
    // (name, M, K, N): the seed network's linear layers, and square GEMMs.
    for (name, m, k, n) in [
        ("seed_fc1", BATCH, 3136, 100),
        ("seed_fc2", BATCH, 100, 10),
        ("square_1024", 1024, 1024, 1024),
        ("square_2048", 2048, 2048, 2048),
    ] {
        let a = tensor(&[m, k]);
        let b = tensor(&[n, k]);
        let bias = tensor(&[n]);
        let op = Gemm {
            trans_b: true,
            relu: true,
            ..Gemm::default()
        };
        group.throughput(Throughput::Elements((2 * m * k * n) as u64));
        for threads in [1, 2] {
            let cpu = Cpu::new(threads);
            let mut y = vec![0f32; m * n];
            group.bench_function(BenchmarkId::new(name, format!("{threads}t")), |bch| {
                bch.iter(|| {
                    op.run_into(&cpu, black_box(&a), &b, Some(&bias), &mut y)
                        .unwrap()
                })
            });
        }
    }
    group.finish();
}

/// The seed network's average pool, counted in input elements read.
fn pool(c: &mut Criterion) {
    let mut group = quick(c, "pool");
    let x = tensor(&[BATCH, 64, 28, 28]);
    let op = Pool2d {
        strides: [4, 4],
        ..Pool2d::new(PoolKind::Average, [4, 4])
    };
    let mut y = vec![0f32; op.output_shape(&x.shape).unwrap().iter().product()];
    group.throughput(Throughput::Elements(x.len() as u64));
    for threads in [1, 2] {
        let cpu = Cpu::new(threads);
        group.bench_function(
            BenchmarkId::new("seed_avgpool4", format!("{threads}t")),
            |b| b.iter(|| op.run_into(&cpu, black_box(&x), &mut y).unwrap()),
        );
    }
    group.finish();
}

criterion_group!(benches, conv, linear, pool);
criterion_main!(benches);
