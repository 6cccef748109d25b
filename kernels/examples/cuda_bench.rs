//! Times this crate's CUDA GEMM and convolution on the shapes that
//! `scripts/gpu-check.sh` compares with cuBLAS and cuDNN
//! (`scripts/gpu-bench-torch.py` times those through PyTorch). Prints one
//! JSON object per case: op, dtype, shape, milliseconds per call (the
//! median of several timed runs, each of several calls between two
//! synchronisations) and TFLOP/s.
//!
//! ```text
//! cargo run --release -p mpinfer-kernels --example cuda_bench            # on a GPU
//! cargo run --release -p mpinfer-kernels --example cuda_bench -- --small # tiny shapes, a smoke test
//! ```

use std::time::Instant;

use mpinfer_kernels::cpu::{Conv2d, Gemm};
use mpinfer_kernels::cuda::Gpu;
use mpinfer_kernels::device::choose;
use mpinfer_kernels::{Device, DeviceRequest, KernelError, StoredDType, Tensor};

/// `[M, K, N]` of each GEMM: square ones, and the seed network's two
/// linear layers at batch 1024.
const GEMMS: [[usize; 3]; 4] = [
    [1024, 1024, 1024],
    [4096, 4096, 4096],
    [1024, 3136, 100],
    [1024, 100, 10],
];
/// `(x shape, w shape)` of the seed network's convolutions at batch 1024.
const CONVS: [([usize; 4], [usize; 4]); 2] = [
    ([1024, 1, 32, 32], [32, 1, 3, 3]),
    ([1024, 32, 30, 30], [64, 32, 3, 3]),
];
const DTYPES: [StoredDType; 2] = [StoredDType::F32, StoredDType::BF16];

fn main() -> Result<(), KernelError> {
    let small = std::env::args().any(|a| a == "--small");
    let gpu = match choose(DeviceRequest::Cuda, 0)? {
        (Device::Cuda(i), _) => Gpu::new(i)?,
        (Device::Cpu, why) => return Err(KernelError::Unavailable(why)),
    };
    gpu.load_all()?;
    // A tiny shape per case, one call: checks the path, times nothing.
    let shrink = |d: usize, to: usize| if small { d.min(to) } else { d };
    for dtype in DTYPES {
        for [m, k, n] in GEMMS {
            let (m, k, n) = (shrink(m, 33), shrink(k, 40), shrink(n, 17));
            let a = gpu.upload(&filled(vec![m, k]), dtype)?;
            let b = gpu.upload(&filled(vec![k, n]), dtype)?;
            let ms = time(&gpu, small, || {
                gpu.gemm(&Gemm::default(), &a, &b, None).map(drop)
            })?;
            report(
                &gpu,
                "gemm",
                dtype,
                &format!("{m}x{k}x{n}"),
                ms,
                2.0 * (m * k * n) as f64,
            );
        }
        for (xs, ws) in CONVS {
            let xs = [shrink(xs[0], 2), xs[1], shrink(xs[2], 9), shrink(xs[3], 9)];
            let x = gpu.upload(&filled(xs.to_vec()), dtype)?;
            let w = gpu.upload(&filled(ws.to_vec()), dtype)?;
            let conv = Conv2d::default();
            let ms = time(&gpu, small, || gpu.conv2d(&conv, &x, &w, None).map(drop))?;
            let (oh, ow) = (xs[2] - ws[2] + 1, xs[3] - ws[3] + 1);
            let flops = 2.0 * (xs[0] * ws[0] * oh * ow * ws[1] * ws[2] * ws[3]) as f64;
            report(&gpu, "conv", dtype, &format!("x{xs:?} w{ws:?}"), ms, flops);
        }
    }
    Ok(())
}

/// Values in [-1, 1) that do not repeat along a row.
fn filled(shape: Vec<usize>) -> Tensor {
    let n = shape.iter().product();
    let data = (0..n)
        .map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0)
        .collect();
    Tensor::new(shape, data)
}

/// Milliseconds per call of `op`: the median of 5 runs of enough calls to
/// take about 50 ms, after a warm-up.
fn time(
    gpu: &Gpu,
    once: bool,
    mut op: impl FnMut() -> Result<(), KernelError>,
) -> Result<f64, KernelError> {
    op()?;
    gpu.synchronize()?;
    if once {
        return Ok(f64::NAN);
    }
    let t = Instant::now();
    op()?;
    gpu.synchronize()?;
    let calls = ((0.05 / t.elapsed().as_secs_f64().max(1e-6)) as usize).clamp(1, 1000);
    let mut runs = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..calls {
            op()?;
        }
        gpu.synchronize()?;
        runs.push(t.elapsed().as_secs_f64() * 1e3 / calls as f64);
    }
    runs.sort_by(f64::total_cmp);
    Ok(runs[2])
}

fn report(gpu: &Gpu, op: &str, dtype: StoredDType, shape: &str, ms: f64, flops: f64) {
    let tflops = flops / (ms * 1e-3) / 1e12;
    let finite = |v: f64| {
        if v.is_finite() {
            format!("{v:.4}")
        } else {
            "null".into()
        }
    };
    println!(
        "{{\"impl\": \"mpinfer\", \"device\": \"{}\", \"op\": \"{op}\", \"dtype\": \"{}\", \
         \"shape\": \"{shape}\", \"ms\": {}, \"tflops\": {}}}",
        gpu.name(),
        format!("{dtype:?}").to_lowercase(),
        finite(ms),
        finite(tflops),
    );
}
