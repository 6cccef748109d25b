//! CPU kernel throughput at the seed network's shapes and at a large GEMM, on
//! 1 and 2 threads. Throughput is counted in floating-point operations, so
//! criterion's "Gelem/s" reads as GFLOP/s; one core of the test machine peaks
//! at about 100–110 GFLOP/s (f32 AVX-512 FMA, measured with the `gemm` crate
//! on 512³).
//!
//! `cargo bench --bench kernels`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mpinfer_kernels::cpu::{Conv2d, Cpu, Gemm, Pool2d, PoolKind};
use mpinfer_kernels::Tensor;

fn tensor(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    // Written values on every page, none of them special.
    Tensor::new(
        shape.to_vec(),
        (0..n).map(|i| ((i % 17) as f32 - 8.0) / 16.0).collect(),
    )
}

fn conv(c: &mut Criterion) {
    let mut group = c.benchmark_group("conv2d");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10);
    // (name, input, weight): the seed network's two convolutions at batch 64.
    let cases = [
        ("seed_conv1", [64, 1, 32, 32], [32, 1, 3, 3]),
        ("seed_conv2", [64, 32, 30, 30], [64, 32, 3, 3]),
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
    let mut group = c.benchmark_group("gemm");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10);
    // (name, M, K, N): the seed network's first linear layer at batch 256, and 1024³.
    for (name, m, k, n) in [
        ("seed_fc1", 256, 3136, 100),
        ("square_1024", 1024, 1024, 1024),
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

/// The seed network's average pool at batch 64, counted in input elements
/// ("Gelem/s" is input elements read per second).
fn pool(c: &mut Criterion) {
    let mut group = c.benchmark_group("pool");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10);
    let x = tensor(&[64, 64, 28, 28]);
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
