//! Whole models on the CUDA backend against the CPU backend: the exported
//! fixtures (residuals, concatenations, attention) and every strategy on
//! two in-process ranks. Skipped, visibly, where no CUDA device (real or
//! emulated) is found; `MPINFER_REQUIRE_CUDA=1` makes that a failure.

mod common;

use common::{run_on_device, whole_program};
use mpinfer_kernels::cpu::Cpu;
use mpinfer_kernels::cuda::Gpu;
use mpinfer_kernels::device::choose;
use mpinfer_kernels::{Device, DeviceRequest, StoredDType, Tensor};
use mpinfer_runtime::exec::{Backend, CudaBackend, Operand};
use mpinfer_runtime::model::Model;
use mpinfer_runtime::onnx;
use mpinfer_runtime::run::{Exec, RunOptions, Strategy};
use mpinfer_runtime::ModelError;
use mpinfer_testkit::skip_cuda;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::Path;

fn backend() -> Option<CudaBackend> {
    match choose(DeviceRequest::Auto, 0) {
        Ok((Device::Cuda(i), _)) => Some(CudaBackend::new(
            Gpu::new(i).expect("open the device choose picked"),
            Cpu::new(1),
        )),
        Ok((Device::Cpu, why)) => {
            let why = why.trim_end_matches("; using the CPU");
            let emulated = std::env::var("MPINFER_CUDA_EMULATED").is_ok_and(|v| v == "1");
            assert!(
                !emulated,
                "MPINFER_CUDA_EMULATED=1 but there is no device: {why}"
            );
            skip_cuda(&format!("no CUDA device to test on: {why}"));
            None
        }
        Err(e) => panic!("choose(Auto) must not fail: {e}"),
    }
}

fn input(model: &Model, rows: usize) -> Tensor {
    let mut rng = StdRng::seed_from_u64(7);
    let shape: Vec<usize> = std::iter::once(rows)
        .chain(model.sample_shape.iter().copied())
        .collect();
    let n = shape.iter().product();
    Tensor::new(shape, (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect())
}

fn close(got: &Tensor, want: &Tensor, what: &str) {
    assert_eq!(got.shape, want.shape, "{what}: shape");
    let scale = want
        .data
        .iter()
        .fold(0f32, |m, v| m.max(v.abs()))
        .max(1e-30);
    for (i, (g, w)) in got.data.iter().zip(&want.data).enumerate() {
        assert!(
            (g - w).abs() <= 1e-4 * scale,
            "{what}: element {i}: CUDA {g}, CPU {w}"
        );
    }
}

/// `model` whole on `backend`, as one rank alone runs it.
fn whole<B: Backend>(backend: &B, model: &Model, x: &Tensor) -> Tensor {
    let (program, spec) = whole_program(model, x.shape[0]);
    let mut no_comm = |_: usize, _: Operand<'_>| -> Result<(), ModelError> {
        unreachable!("a whole program has no collectives")
    };
    let inputs = vec![(model.input, x.clone())];
    let mut ys = program
        .run(backend, model, &spec, inputs, &mut no_comm)
        .unwrap();
    ys.swap_remove(0)
}

#[test]
fn exported_models_match_the_cpu_on_the_device() {
    let Some(cuda) = backend() else { return };
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/torch");
    for family in ["sequential", "resnet_basic", "densenet", "vit"] {
        let model = onnx::load(&fixtures.join(format!("{family}.dynamo.onnx"))).unwrap();
        let x = input(&model, 3);
        let cpu = whole(&Cpu::new(1), &model, &x);
        let before = cuda.device_steps();
        let gpu = whole(&cuda, &model, &x);
        assert!(
            cuda.device_steps() > before,
            "{family}: no step ran on the device"
        );
        // Residuals, concatenations, normalisation and attention: every
        // step has a CUDA kernel.
        assert_eq!(cuda.host_steps(), Default::default(), "{family}");
        close(&gpu, &cpu, family);
        for strategy in [Strategy::Data, Strategy::Tensor, Strategy::Pipeline] {
            let opts = RunOptions {
                strategy,
                batch_size: Some(2),
                ..RunOptions::default()
            };
            let got = run_on_device(2, &model, Exec::Cuda(&cuda), &x, &opts);
            close(&got, &cpu, &format!("{family}, {strategy:?} on 2 ranks"));
        }
    }
}

fn fixture(family: &str) -> Model {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/torch");
    onnx::load(&fixtures.join(format!("{family}.dynamo.onnx"))).unwrap()
}

/// Chunks of 7 values: every allreduce and gather of these models is staged
/// in many chunks, the last one short.
#[test]
fn collectives_staged_in_small_chunks_match_the_cpu() {
    let Some(cuda) = backend() else { return };
    let cuda = cuda.with_staging_chunk(7);
    for family in ["resnet_basic", "vit"] {
        let model = fixture(family);
        let x = input(&model, 3);
        let cpu = whole(&Cpu::new(1), &model, &x);
        let opts = RunOptions {
            strategy: Strategy::Tensor,
            ..RunOptions::default()
        };
        for ranks in [2, 3] {
            let got = run_on_device(ranks, &model, Exec::Cuda(&cuda), &x, &opts);
            close(&got, &cpu, &format!("{family}, tensor on {ranks} ranks"));
        }
    }
}

/// 16-bit storage means 16-bit weights with f32 activations on both
/// backends: the same rounded weights, so the same outputs; and the
/// rounding is really applied (the outputs move away from f32 weights').
#[test]
fn sixteen_bit_weights_with_f32_activations_match_the_cpu() {
    let Some(cuda) = backend() else { return };
    let model = fixture("resnet_basic");
    let x = input(&model, 2);
    let at = |dtype, exec| {
        let opts = RunOptions {
            dtype,
            ..RunOptions::default()
        };
        run_on_device(1, &model, exec, &x, &opts)
    };
    let cpu = Cpu::new(1);
    let full = at(StoredDType::F32, Exec::Cpu(&cpu));
    for dtype in [StoredDType::F16, StoredDType::BF16] {
        let want = at(dtype, Exec::Cpu(&cpu));
        let got = at(dtype, Exec::Cuda(&cuda));
        close(&got, &want, &format!("{dtype:?} weights"));
        let moved = want
            .data
            .iter()
            .zip(&full.data)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(moved > 0.0, "{dtype:?}: the weights were not rounded");
    }
}

/// Every fixture of both exporters (the zoo's op set: grouped and depthwise
/// convolutions, squeeze-excitation, channel shuffles, LayerNorm,
/// attention) runs with no step on the CPU, and agrees with the CPU.
#[test]
fn every_fixture_runs_on_the_device_alone() {
    let Some(cuda) = backend() else { return };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/torch");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".onnx"))
        .collect();
    names.sort();
    assert!(names.len() >= 26, "fixtures: {names:?}");
    for name in names {
        let model = onnx::load(&dir.join(&name)).unwrap();
        let x = input(&model, 2);
        let cpu = whole(&Cpu::new(1), &model, &x);
        let before = cuda.host_steps();
        let gpu = whole(&cuda, &model, &x);
        assert_eq!(cuda.host_steps(), before, "{name}: steps ran on the CPU");
        close(&gpu, &cpu, &name);
    }
}
