//! The seed network on mpinfer's CPU kernels, timed, and checked against ONNX
//! Runtime's output for the same weights and input.
//!
//! ```text
//! .venv/bin/python examples/seed_net/model.py make target/seed_net
//! cargo run --release --example seed_net -- target/seed_net THREADS REPEATS
//! ```
//! Prints images per second (median of REPEATS forward passes over the batch).

use mpinfer_kernels::cpu::{Conv2d, Cpu, Gemm, Pool2d, PoolKind};
use mpinfer_kernels::Tensor;
use std::time::Instant;

fn read_f32(path: &str) -> Vec<f32> {
    let bytes = std::fs::read(path)
        .unwrap_or_else(|e| panic!("{path}: {e} (run examples/seed_net/model.py make first)"));
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

struct SeedNet {
    conv1: (Tensor, Vec<f32>),
    conv2: (Tensor, Vec<f32>),
    fc1: (Tensor, Tensor),
    fc2: (Tensor, Tensor),
}

impl SeedNet {
    fn load(dir: &str) -> SeedNet {
        let all = read_f32(&format!("{dir}/weights.bin"));
        let mut at = 0;
        let mut take = |shape: Vec<usize>| {
            let n: usize = shape.iter().product();
            let t = Tensor::new(shape, all[at..at + n].to_vec());
            at += n;
            t
        };
        SeedNet {
            conv1: (take(vec![32, 1, 3, 3]), take(vec![32]).data),
            conv2: (take(vec![64, 32, 3, 3]), take(vec![64]).data),
            fc1: (take(vec![100, 3136]), take(vec![100])),
            fc2: (take(vec![10, 100]), take(vec![10])),
        }
    }

    /// One forward pass into `ws`, whose buffers live across calls: fresh
    /// memory costs a page fault per 4 KiB on first touch (the second
    /// convolution's output alone is 51 MB at batch 256), and an inference
    /// engine keeps its activations in reused memory, as ONNX Runtime's arena does.
    fn forward(&self, cpu: &Cpu, x: &Tensor, ws: &mut Workspace) {
        let relu_conv = Conv2d {
            relu: true,
            ..Conv2d::default()
        };
        relu_conv
            .run_into(cpu, x, &self.conv1.0, Some(&self.conv1.1), &mut ws.h1.data)
            .unwrap();
        relu_conv
            .run_into(
                cpu,
                &ws.h1,
                &self.conv2.0,
                Some(&self.conv2.1),
                &mut ws.h2.data,
            )
            .unwrap();
        let pool = Pool2d {
            strides: [4, 4],
            ..Pool2d::new(PoolKind::Average, [4, 4])
        };
        pool.run_into(cpu, &ws.h2, &mut ws.pooled.data).unwrap();
        let flat = Tensor {
            shape: vec![ws.pooled.shape[0], 3136],
            data: std::mem::take(&mut ws.pooled.data),
        };
        let fc = Gemm {
            trans_b: true,
            ..Gemm::default()
        };
        Gemm { relu: true, ..fc }
            .run_into(cpu, &flat, &self.fc1.0, Some(&self.fc1.1), &mut ws.fc1.data)
            .unwrap();
        ws.pooled.data = flat.data;
        fc.run_into(cpu, &ws.fc1, &self.fc2.0, Some(&self.fc2.1), &mut ws.y.data)
            .unwrap();
    }
}

/// Activations of one batch size.
struct Workspace {
    h1: Tensor,
    h2: Tensor,
    pooled: Tensor,
    fc1: Tensor,
    y: Tensor,
}

impl Workspace {
    fn new(batch: usize) -> Workspace {
        Workspace {
            h1: Tensor::zeros(vec![batch, 32, 30, 30]),
            h2: Tensor::zeros(vec![batch, 64, 28, 28]),
            pooled: Tensor::zeros(vec![batch, 64, 7, 7]),
            fc1: Tensor::zeros(vec![batch, 100]),
            y: Tensor::zeros(vec![batch, 10]),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).map_or("target/seed_net", |s| s.as_str());
    let threads: usize = args.get(2).map_or(1, |s| s.parse().expect("THREADS"));
    let repeats: usize = args.get(3).map_or(9, |s| s.parse().expect("REPEATS"));
    let net = SeedNet::load(dir);
    let input = read_f32(&format!("{dir}/input.bin"));
    let batch = input.len() / (32 * 32);
    let x = Tensor::new(vec![batch, 1, 32, 32], input);
    let cpu = Cpu::new(threads);

    let mut ws = Workspace::new(batch);
    net.forward(&cpu, &x, &mut ws);
    let y = &ws.y;
    let expected = read_f32(&format!("{dir}/expected.bin"));
    let worst = y
        .data
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs() / b.abs().max(1e-3))
        .fold(0f32, f32::max);
    assert!(
        worst < 1e-4,
        "output differs from ONNX Runtime's by {worst} (relative)"
    );

    let mut rates: Vec<f64> = (0..repeats)
        .map(|_| {
            let t0 = Instant::now();
            net.forward(&cpu, &x, &mut ws);
            std::hint::black_box(&ws.y);
            batch as f64 / t0.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    println!("{:.1}", rates[rates.len() / 2]);
    eprintln!("seed_net: batch {batch}, {threads} threads, matches ONNX Runtime within {worst:.1e} relative");
}
