//! The CUDA path.
//!
//! - NVRTC compiles every kernel source for compute capability 8.0 and 9.0,
//!   and the PTX holds exactly the kernels the host code launches. Runs
//!   wherever NVRTC is found, GPU or not: the pip wheel in the workspace's
//!   `.venv` (scripts/setup.sh installs it) or the system's.
//! - Device selection reports a missing driver or device without panicking.
//! - Every op agrees with the CPU kernels, in f32, f16 and bf16, with and
//!   without tensor cores, outputs poisoned with NaN before each run so an
//!   element left unwritten fails. These need a CUDA device; without one
//!   they record a skip (`mpinfer_testkit::skip`) with the reason.
//!   `scripts/cuda-emu.sh test` runs them on every machine, on a CPU
//!   emulation of the driver and the kernels (kernels/emu).

mod common;

use std::path::{Path, PathBuf};

use common::{assert_close_tensors, random};
use mpinfer_kernels::cpu::{self, Conv2d, Cpu, Gemm, Pool2d, PoolKind};
use mpinfer_kernels::cuda::cache::KernelCache;
use mpinfer_kernels::cuda::{self, nvrtc, Gpu, GpuTensor};
use mpinfer_kernels::device::{self, choose};
use mpinfer_kernels::{Device, DeviceRequest, KernelError, Stored, StoredDType, Tensor};
use mpinfer_testkit::{skip, skip_cuda};
use rand::rngs::StdRng;
use rand::SeedableRng;

const DTYPES: [StoredDType; 3] = [StoredDType::F32, StoredDType::F16, StoredDType::BF16];

/// The NVRTC library of a pip wheel (CUDA 13 or 12) in the workspace's
/// `.venv`.
fn venv_nvrtc() -> Option<PathBuf> {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/lib");
    let sites: Vec<PathBuf> = std::fs::read_dir(lib)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
        .map(|e| e.path().join("site-packages/nvidia"))
        .collect();
    sites
        .iter()
        .flat_map(|site| {
            [
                site.join("cu13/lib/libnvrtc.so.13"),
                site.join("cuda_nvrtc/lib/libnvrtc.so.12"),
            ]
        })
        .find(|p| p.is_file())
}

/// Loads NVRTC wherever the search finds it; `None` when there is none.
/// When the workspace's wheel is there, some NVRTC must load: the tests
/// compiling kernels then run rather than skip.
fn nvrtc_loaded() -> Option<String> {
    match nvrtc::ensure_loaded() {
        Ok(found) => Some(found),
        Err(e) => match venv_nvrtc() {
            Some(path) => panic!("{} exists but no NVRTC loads: {e}", path.display()),
            None => None,
        },
    }
}

/// Set to 1 by scripts/cuda-emu.sh, which puts its CPU emulation of the
/// driver first on the library path: the device tests must then run on it,
/// so a missing or other device fails them instead of skipping.
const EMULATED: &str = "MPINFER_CUDA_EMULATED";

fn emulated() -> bool {
    std::env::var_os(EMULATED).is_some_and(|v| v == "1")
}

/// The device `choose` picks, or `None` with the skip recorded for the
/// calling test.
fn gpu() -> Option<Gpu> {
    nvrtc_loaded();
    match choose(DeviceRequest::Auto, 0) {
        Ok((Device::Cuda(i), _)) => {
            let gpu = Gpu::new(i).expect("open the CUDA device choose picked");
            assert!(
                !emulated() || gpu.name().contains("CPU emulation"),
                "{EMULATED}=1 but the device is {}",
                gpu.name()
            );
            Some(gpu)
        }
        Ok((Device::Cpu, why)) => {
            let why = why.trim_end_matches("; using the CPU");
            assert!(!emulated(), "{EMULATED}=1 but there is no device: {why}");
            skip_cuda(&format!("no CUDA device to test on: {why}"));
            None
        }
        Err(e) => panic!("choose(Auto) must not fail: {e}"),
    }
}

/// The tensor-core settings worth testing on this device.
fn tensor_core_settings(gpu: &Gpu) -> Vec<bool> {
    if gpu.compute_capability().0 >= 8 {
        vec![false, true]
    } else {
        vec![false]
    }
}

/// `t` rounded to what `dtype` can hold: the values the GPU actually sees.
fn representable(t: &Tensor, dtype: StoredDType) -> Tensor {
    Tensor::new(t.shape.clone(), Stored::from_f32(&t.data, dtype).to_f32())
}

fn abs(t: &Tensor) -> Tensor {
    Tensor::new(t.shape.clone(), t.data.iter().map(|v| v.abs()).collect())
}

/// Relative error allowed against the magnitude of what was summed: f32
/// differs from the CPU by summation order only; 16-bit outputs are also
/// rounded to their 11 or 8 significant bits.
fn tolerance(dtype: StoredDType) -> f64 {
    match dtype {
        StoredDType::F32 => 2e-5,
        StoredDType::F16 => 1.5e-3,
        StoredDType::BF16 => 1e-2,
    }
}

fn poisoned(gpu: &Gpu, shape: Vec<usize>, dtype: StoredDType) -> GpuTensor {
    gpu.full(shape, dtype, f32::NAN).unwrap()
}

// ---------------------------------------------------------------- NVRTC

#[test]
fn nvrtc_compiles_every_source_for_ampere_and_hopper() {
    let Some(found) = nvrtc_loaded() else {
        skip("NVRTC not found (run scripts/setup.sh)");
        return;
    };
    let (major, minor) = nvrtc::version().unwrap();
    println!("NVRTC {major}.{minor} from {found}");
    let launched = cuda::kernel_names();
    for source in &nvrtc::SOURCES {
        for arch in ["compute_80", "compute_90"] {
            let out = nvrtc::compile(source, arch, &[])
                .unwrap_or_else(|e| panic!("{} for {arch} does not compile:\n{e}", source.name));
            assert!(
                !out.log.contains("warning"),
                "{} for {arch} compiles with warnings:\n{}",
                source.name,
                out.log
            );
            let ptx = String::from_utf8_lossy(&out.image);
            let sm = arch.replace("compute_", "sm_");
            assert!(
                ptx.contains(&format!(".target {sm}")),
                "{} targets {sm}",
                source.name
            );
            let wanted: Vec<&str> = launched
                .iter()
                .filter(|(file, _)| *file == source.name)
                .map(|(_, name)| name.as_str())
                .collect();
            assert!(
                !wanted.is_empty(),
                "the host launches nothing from {}",
                source.name
            );
            for name in &wanted {
                assert!(
                    ptx.contains(&format!(".entry {name}(")),
                    "{} has no kernel {name}, which the host launches",
                    source.name
                );
            }
            // And nothing is compiled that the host never launches.
            for line in ptx.lines().filter(|l| l.contains(".entry ")) {
                let name = line
                    .split(".entry ")
                    .nth(1)
                    .and_then(|rest| rest.split('(').next())
                    .unwrap()
                    .trim();
                assert!(
                    wanted.contains(&name),
                    "{}: kernel {name} is never launched",
                    source.name
                );
            }
        }
    }
}

#[test]
fn cubins_for_ampere_and_hopper_do_not_spill_registers() {
    if nvrtc_loaded().is_none() {
        skip("NVRTC not found (run scripts/setup.sh)");
        return;
    }
    for source in &nvrtc::SOURCES {
        for arch in ["sm_80", "sm_90"] {
            let out = nvrtc::compile(source, arch, &["--ptxas-options=-v"])
                .unwrap_or_else(|e| panic!("{} for {arch} does not compile:\n{e}", source.name));
            assert!(
                out.image.len() > 4 && &out.image[1..4] == b"ELF",
                "{} for {arch}: a cubin",
                source.name
            );
            let mut kernel = "";
            for line in out.log.lines() {
                if let Some(rest) = line.split("Compiling entry function '").nth(1) {
                    kernel = rest.split('\'').next().unwrap_or("");
                }
                // "..., 60 bytes spill stores, 60 bytes spill loads"
                if let Some(at) = line.find(" bytes spill stores") {
                    let stores: u64 = line[..at]
                        .rsplit(|c: char| !c.is_ascii_digit())
                        .next()
                        .and_then(|d| d.parse().ok())
                        .unwrap_or_else(|| panic!("unreadable ptxas line: {line}"));
                    assert_eq!(
                        stores, 0,
                        "{kernel} ({}, {arch}) spills: {line}",
                        source.name
                    );
                }
            }
            assert!(
                !kernel.is_empty(),
                "ptxas reported no kernels for {}:\n{}",
                source.name,
                out.log
            );
        }
    }
}

#[test]
fn nvrtc_reports_its_file_version_and_architectures() {
    if nvrtc_loaded().is_none() {
        skip("NVRTC not found (run scripts/setup.sh)");
        return;
    }
    let found = nvrtc::library().unwrap();
    println!("{found}; architectures {:?}", found.architectures());
    assert!(found.path().is_file(), "{}", found.path().display());
    let (major, _) = found.version();
    assert!(major >= 12, "{found}");
    assert_eq!(nvrtc::version().unwrap(), found.version());
    let archs = found.architectures();
    assert!(archs.contains(&80) && archs.contains(&90), "{archs:?}");
    assert!(archs.windows(2).all(|w| w[0] < w[1]), "{archs:?}");
    assert_eq!(nvrtc::compile_target((9, 0), archs).unwrap(), "sm_90");
    // Asking for the library in use again is no error.
    nvrtc::load_library(found.path()).unwrap();
}

#[test]
fn the_kernel_cache_compiles_once_and_then_reads_the_image_back() {
    if nvrtc_loaded().is_none() {
        skip("NVRTC not found (run scripts/setup.sh)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("mpinfer-kernel-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let source = &nvrtc::ELEMENTWISE;
    let cache = KernelCache::new(Some(dir.clone()));
    let first = cache.compile(source, "compute_80", &[]).unwrap();
    assert_eq!(cache.compiled(), 1);
    assert!(
        String::from_utf8_lossy(&first).contains(".target sm_80"),
        "PTX for sm_80"
    );
    let again = cache.compile(source, "compute_80", &[]).unwrap();
    assert_eq!(cache.compiled(), 1, "the second call compiled again");
    assert_eq!(again, first);
    // A later process, sharing the directory, compiles nothing either.
    let later = KernelCache::new(Some(dir.clone()));
    assert_eq!(later.compile(source, "compute_80", &[]).unwrap(), first);
    assert_eq!(later.compiled(), 0);
    // Other options are another image.
    later.compile(source, "compute_80", &["-lineinfo"]).unwrap();
    assert_eq!(later.compiled(), 1);
    // Two images; the hidden files beside them are their compile locks.
    let entries = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            !e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')
        })
        .count();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(entries, 2);
}

/// Set in the child process of the next test: the `$CUDA_HOME` it expects
/// NVRTC under.
const EXPECT_CUDA_HOME: &str = "MPINFER_TEST_EXPECT_CUDA_HOME";

#[test]
fn nvrtc_under_cuda_home_is_found_before_the_wheel() {
    if let Some(home) = std::env::var_os(EXPECT_CUDA_HOME) {
        let found = nvrtc::library().unwrap();
        assert!(
            found.path().starts_with(&home),
            "{found}, not under {}",
            Path::new(&home).display()
        );
        return;
    }
    let Some(wheel) = venv_nvrtc() else {
        skip("no NVRTC wheel in .venv to stand for a toolkit (run scripts/setup.sh)");
        return;
    };
    // A toolkit whose lib64 is the wheel's directory (so that NVRTC's
    // builtins sit beside it too).
    let home = std::env::temp_dir().join(format!("mpinfer-cuda-home-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).unwrap();
    std::os::unix::fs::symlink(wheel.parent().unwrap(), home.join("lib64")).unwrap();
    // A fresh process, since this one may have bound NVRTC already.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "nvrtc_under_cuda_home_is_found_before_the_wheel",
            "--nocapture",
        ])
        .env(EXPECT_CUDA_HOME, &home)
        .env("CUDA_HOME", &home)
        .env_remove("CUDA_PATH")
        .env_remove(nvrtc::NVRTC_ENV)
        .env_remove("MPINFER_SKIP_LOG")
        .output()
        .unwrap();
    std::fs::remove_dir_all(&home).unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_missing_nvrtc_library_is_an_error_not_a_panic() {
    let err = nvrtc::load_library(Path::new("/nonexistent/libnvrtc.so.12")).unwrap_err();
    assert!(matches!(err, KernelError::LoadNvrtc { .. }), "{err:?}");
    assert!(
        err.to_string().contains("/nonexistent/libnvrtc.so.12"),
        "{err}"
    );
    // The loader's own words come along as the source.
    let source = std::error::Error::source(&err).expect("the loader's error as the source");
    assert!(
        err.chain().ends_with(&source.to_string()) && !source.to_string().is_empty(),
        "{}",
        err.chain()
    );
}

// ---------------------------------------------------------------- devices

#[test]
fn choosing_a_device_reports_why_and_never_panics() {
    assert_eq!(
        "auto".parse::<DeviceRequest>().unwrap(),
        DeviceRequest::Auto
    );
    assert_eq!("CPU".parse::<DeviceRequest>().unwrap(), DeviceRequest::Cpu);
    assert_eq!(
        "cuda".parse::<DeviceRequest>().unwrap(),
        DeviceRequest::Cuda
    );
    assert!("tpu".parse::<DeviceRequest>().is_err());
    assert_eq!(choose(DeviceRequest::Cpu, 3).unwrap().0, Device::Cpu);

    let (auto, reason) = choose(DeviceRequest::Auto, 0).expect("auto always picks something");
    assert!(
        !reason.is_empty() && !reason.contains('\n'),
        "one-line reason: {reason:?}"
    );
    let cuda = choose(DeviceRequest::Cuda, 0);
    if !device::cuda_driver_present() {
        assert_eq!(auto, Device::Cpu);
        assert!(reason.contains("no CUDA driver library"), "{reason}");
        let err = cuda.unwrap_err();
        assert!(matches!(err, KernelError::Unavailable(_)), "{err:?}");
        assert!(err.to_string().contains("no CUDA driver"), "{err}");
        assert!(Gpu::new(0).is_err());
        return;
    }
    match auto {
        Device::Cuda(i) => {
            assert_eq!(cuda.unwrap().0, Device::Cuda(i));
            // Ranks share the node's devices round-robin.
            let Device::Cuda(j) = choose(DeviceRequest::Auto, 1).unwrap().0 else {
                panic!("a device for rank 0 but not rank 1");
            };
            let Device::Cuda(k) = choose(DeviceRequest::Auto, i + 1000).unwrap().0 else {
                panic!("a device for rank 0 but not rank {}", i + 1000);
            };
            assert!(j <= 1 && k < 1000 + i + 1);
        }
        Device::Cpu => {
            // Asked for CUDA instead, the reason is the error.
            let err = cuda.unwrap_err().chain();
            assert!(reason.contains(&err), "auto: {reason}; cuda: {err}");
        }
    }
}

#[test]
fn opening_a_device_that_does_not_exist_is_an_error() {
    let err = Gpu::new(1 << 20)
        .err()
        .expect("no machine has a million GPUs");
    // No such device, or no driver to ask.
    assert!(
        matches!(
            err,
            KernelError::Unavailable(_) | KernelError::Driver { .. }
        ),
        "{err:?}"
    );
}

// ---------------------------------------------------------------- conv

struct ConvCase {
    x: [usize; 4],
    m: usize,
    k: [usize; 2],
    conv: Conv2d,
    bias: bool,
}

fn conv_cases() -> Vec<ConvCase> {
    let d = Conv2d::default();
    let case = |x, m, k, conv, bias| ConvCase {
        x,
        m,
        k,
        conv,
        bias,
    };
    vec![
        // Implicit GEMM: fused ReLU, symmetric padding.
        case(
            [2, 3, 9, 11],
            20,
            [3, 3],
            Conv2d {
                pads: [1; 4],
                relu: true,
                ..d
            },
            true,
        ),
        // Asymmetric pads, stride and dilation differing per axis, 2 groups.
        case(
            [1, 4, 13, 10],
            32,
            [3, 2],
            Conv2d {
                strides: [2, 1],
                dilations: [2, 1],
                pads: [1, 0, 2, 1],
                groups: 2,
                ..d
            },
            true,
        ),
        // Depthwise, stride 2 (direct kernel).
        case(
            [3, 6, 7, 7],
            6,
            [3, 3],
            Conv2d {
                strides: [2, 2],
                pads: [1; 4],
                groups: 6,
                relu: true,
                ..d
            },
            false,
        ),
        // 1x1 with more output channels than one tile has rows.
        case([1, 8, 5, 6], 130, [1, 1], d, true),
        // Dilation 2 in both axes, few channels per group (direct kernel).
        case(
            [2, 2, 6, 5],
            4,
            [2, 2],
            Conv2d {
                dilations: [2, 2],
                pads: [0, 1, 0, 1],
                groups: 2,
                ..d
            },
            true,
        ),
        // Many k tiles and two n tiles.
        case(
            [1, 64, 12, 12],
            48,
            [3, 3],
            Conv2d {
                pads: [1; 4],
                relu: true,
                ..d
            },
            true,
        ),
        // Small images folded together along N, stride 2, odd channel count.
        case(
            [4, 32, 4, 4],
            17,
            [3, 3],
            Conv2d {
                strides: [2, 2],
                pads: [0, 0, 1, 1],
                ..d
            },
            false,
        ),
        // Three groups of 16 output channels: one grid z per group.
        case(
            [2, 9, 8, 7],
            48,
            [3, 3],
            Conv2d {
                pads: [1; 4],
                groups: 3,
                ..d
            },
            true,
        ),
        // Batch 0.
        case([0, 3, 5, 5], 16, [3, 3], d, true),
    ]
}

#[test]
fn conv2d_matches_the_cpu() {
    let Some(mut gpu) = gpu() else { return };
    let cpu = Cpu::new(2);
    let mut rng = StdRng::seed_from_u64(11);
    for case in conv_cases() {
        let [_, c, _, _] = case.x;
        let x = random(&case.x, &mut rng);
        let w = random(
            &[case.m, c / case.conv.groups, case.k[0], case.k[1]],
            &mut rng,
        );
        let b = random(&[case.m], &mut rng);
        for dtype in DTYPES {
            let (x, w, b) = (
                representable(&x, dtype),
                representable(&w, dtype),
                representable(&b, dtype),
            );
            let bias = case.bias.then_some(b.data.as_slice());
            let want = case.conv.run(&cpu, &x, &w, bias).unwrap();
            let magnitude = Conv2d {
                relu: false,
                ..case.conv
            };
            let abs_b = abs(&b);
            let scale = magnitude
                .run(
                    &cpu,
                    &abs(&x),
                    &abs(&w),
                    case.bias.then_some(abs_b.data.as_slice()),
                )
                .unwrap();
            let (gx, gw, gb) = (
                gpu.upload(&x, dtype).unwrap(),
                gpu.upload(&w, dtype).unwrap(),
                gpu.upload(&b, dtype).unwrap(),
            );
            for tc in tensor_core_settings(&gpu) {
                gpu.set_tensor_cores(tc);
                let mut y = poisoned(&gpu, want.shape.clone(), dtype);
                gpu.conv2d_into(&case.conv, &gx, &gw, case.bias.then_some(&gb), &mut y)
                    .unwrap();
                let got = gpu.download(&y).unwrap();
                let what = format!(
                    "conv {:?} {:?} {dtype:?} tensor cores {tc}",
                    case.x, case.conv
                );
                assert_close_tensors(&got, &want, &scale.data, tolerance(dtype), &what);
            }
            let y = gpu
                .conv2d(&case.conv, &gx, &gw, case.bias.then_some(&gb))
                .unwrap();
            assert_eq!(y.shape(), want.shape.as_slice());
            assert_eq!(y.dtype(), dtype);
        }
    }
}

#[test]
fn conv2d_rejects_mismatched_operands() {
    let Some(gpu) = gpu() else { return };
    let x = gpu.full(vec![1, 4, 5, 5], StoredDType::F32, 1.0).unwrap();
    let w16 = gpu.full(vec![2, 4, 3, 3], StoredDType::F16, 1.0).unwrap();
    let err = gpu.conv2d(&Conv2d::default(), &x, &w16, None).unwrap_err();
    assert!(
        matches!(err, KernelError::Invalid { op: "Conv", .. }),
        "{err:?}"
    );
    let w = gpu.full(vec![2, 3, 3, 3], StoredDType::F32, 1.0).unwrap();
    assert!(matches!(
        gpu.conv2d(&Conv2d::default(), &x, &w, None),
        Err(KernelError::Shape { .. })
    ));
    // A tensor of another Gpu (another stream) is refused, not misused.
    let other = Gpu::new(gpu.ordinal()).unwrap();
    let w_other = other.full(vec![2, 4, 3, 3], StoredDType::F32, 1.0).unwrap();
    assert!(gpu.conv2d(&Conv2d::default(), &x, &w_other, None).is_err());
}

// ---------------------------------------------------------------- gemm

#[test]
fn gemm_matches_the_cpu_with_every_attribute() {
    let Some(mut gpu) = gpu() else { return };
    let cpu = Cpu::new(2);
    let mut rng = StdRng::seed_from_u64(12);
    let shapes = [
        (131, 37, 140),
        (5, 1, 3),
        (1, 64, 1),
        (200, 70, 300),
        (0, 4, 3),
        (3, 0, 4),
        (16, 8, 0),
    ];
    for (si, &(m, k, n)) in shapes.iter().enumerate() {
        for (ci, c_shape) in [
            None,
            Some(vec![]),
            Some(vec![n]),
            Some(vec![m, 1]),
            Some(vec![1, n]),
            Some(vec![m, n]),
            Some(vec![1]),
        ]
        .into_iter()
        .enumerate()
        {
            for (trans_a, trans_b) in [(false, false), (false, true), (true, false), (true, true)] {
                let gemm = Gemm {
                    trans_a,
                    trans_b,
                    alpha: [1.0, 0.5, -2.0][(si + ci) % 3],
                    beta: [1.0, 0.25, 0.0][ci % 3],
                    relu: (si + ci) % 2 == 0,
                };
                let a = random(&if trans_a { [k, m] } else { [m, k] }, &mut rng);
                let b = random(&if trans_b { [n, k] } else { [k, n] }, &mut rng);
                let c = c_shape.as_ref().map(|s| random(s, &mut rng));
                for dtype in DTYPES {
                    let (a, b) = (representable(&a, dtype), representable(&b, dtype));
                    let c = c.as_ref().map(|c| representable(c, dtype));
                    let want = gemm.run(&cpu, &a, &b, c.as_ref()).unwrap();
                    let magnitude = Gemm {
                        alpha: gemm.alpha.abs(),
                        beta: gemm.beta.abs(),
                        relu: false,
                        ..gemm
                    };
                    let scale = magnitude
                        .run(&cpu, &abs(&a), &abs(&b), c.as_ref().map(abs).as_ref())
                        .unwrap();
                    let ga = gpu.upload(&a, dtype).unwrap();
                    let gb = gpu.upload(&b, dtype).unwrap();
                    let gc = c.as_ref().map(|c| gpu.upload(c, dtype).unwrap());
                    for tc in tensor_core_settings(&gpu) {
                        gpu.set_tensor_cores(tc);
                        let mut y = poisoned(&gpu, want.shape.clone(), dtype);
                        gpu.gemm_into(&gemm, &ga, &gb, gc.as_ref(), &mut y).unwrap();
                        let got = gpu.download(&y).unwrap();
                        let what = format!(
                            "gemm {m}x{k}x{n} C {c_shape:?} {gemm:?} {dtype:?} tensor cores {tc}"
                        );
                        assert_close_tensors(&got, &want, &scale.data, tolerance(dtype), &what);
                    }
                }
            }
        }
    }
}

#[test]
fn gemm_rejects_mismatched_operands() {
    let Some(gpu) = gpu() else { return };
    let a = gpu.full(vec![3, 4], StoredDType::F32, 1.0).unwrap();
    let b = gpu.full(vec![5, 2], StoredDType::F32, 1.0).unwrap();
    assert!(matches!(
        gpu.gemm(&Gemm::default(), &a, &b, None),
        Err(KernelError::Shape { .. })
    ));
    let b = gpu.full(vec![4, 2], StoredDType::BF16, 1.0).unwrap();
    assert!(matches!(
        gpu.gemm(&Gemm::default(), &a, &b, None),
        Err(KernelError::Invalid { .. })
    ));
    let b = gpu.full(vec![4, 2], StoredDType::F32, 1.0).unwrap();
    let c = gpu.full(vec![3, 3], StoredDType::F32, 1.0).unwrap();
    assert!(matches!(
        gpu.gemm(&Gemm::default(), &a, &b, Some(&c)),
        Err(KernelError::Shape { .. })
    ));
}

// ---------------------------------------------------------------- pooling

#[test]
fn pooling_matches_the_cpu() {
    let Some(gpu) = gpu() else { return };
    let cpu = Cpu::new(2);
    let mut rng = StdRng::seed_from_u64(13);
    let base = |kind, kernel| Pool2d::new(kind, kernel);
    let mut cases = Vec::new();
    for kind in [PoolKind::Max, PoolKind::Average] {
        cases.push(([2, 3, 8, 8], base(kind, [2, 2])));
        cases.push((
            [1, 2, 7, 9],
            Pool2d {
                strides: [2, 2],
                pads: [1; 4],
                ..base(kind, [3, 3])
            },
        ));
        cases.push((
            [1, 2, 7, 9],
            Pool2d {
                strides: [2, 3],
                pads: [0, 1, 1, 0],
                ceil_mode: true,
                ..base(kind, [3, 2])
            },
        ));
        cases.push((
            [2, 1, 8, 8],
            Pool2d {
                strides: [2, 2],
                dilations: [2, 2],
                pads: [1, 2, 0, 1],
                ceil_mode: true,
                count_include_pad: true,
                ..base(kind, [3, 3])
            },
        ));
        cases.push((
            [1, 3, 6, 5],
            Pool2d {
                strides: [2, 2],
                ceil_mode: true,
                ..base(kind, [2, 2])
            },
        ));
        cases.push((
            [1, 1, 5, 5],
            Pool2d {
                pads: [2; 4],
                ..base(kind, [3, 3])
            },
        ));
        cases.push((
            [1, 1, 5, 5],
            Pool2d {
                pads: [2; 4],
                count_include_pad: true,
                ..base(kind, [3, 3])
            },
        ));
        cases.push(([0, 3, 4, 4], base(kind, [2, 2])));
    }
    for (shape, pool) in cases {
        let mut x = random(&shape, &mut rng);
        if x.len() > 5 {
            x.data[5] = f32::NAN;
        }
        for dtype in DTYPES {
            let x = representable(&x, dtype);
            let want = pool.run(&cpu, &x).unwrap();
            let gx = gpu.upload(&x, dtype).unwrap();
            let mut y = poisoned(&gpu, want.shape.clone(), dtype);
            gpu.pool2d_into(&pool, &gx, &mut y).unwrap();
            let got = gpu.download(&y).unwrap();
            // Max is exact; an average is off by its output rounding.
            let scale: Vec<f32> = want.data.iter().map(|v| v.abs().max(1.0)).collect();
            let rel = if pool.kind == PoolKind::Max {
                0.0
            } else {
                tolerance(dtype)
            };
            assert_close_tensors(
                &got,
                &want,
                &scale,
                rel,
                &format!("pool {shape:?} {pool:?} {dtype:?}"),
            );
        }
    }
}

#[test]
fn global_average_pool_and_flatten_match_the_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = StdRng::seed_from_u64(14);
    for shape in [
        [3, 4, 5, 6],
        [1, 70, 7, 7],
        [2, 3, 1, 1],
        [2, 2, 33, 31],
        [0, 4, 3, 3],
    ] {
        let x = random(&shape, &mut rng);
        for dtype in DTYPES {
            let x = representable(&x, dtype);
            let want = cpu::global_average_pool(&x).unwrap();
            let gx = gpu.upload(&x, dtype).unwrap();
            let mut y = poisoned(&gpu, want.shape.clone(), dtype);
            gpu.global_average_pool_into(&gx, &mut y).unwrap();
            let got = gpu.download(&y).unwrap();
            let scale = vec![1.0; want.len()];
            assert_close_tensors(
                &got,
                &want,
                &scale,
                tolerance(dtype),
                &format!("global average pool {shape:?} {dtype:?}"),
            );

            let flat = cuda::flatten(gx, 1).unwrap();
            assert_eq!(flat.shape(), [shape[0], shape[1] * shape[2] * shape[3]]);
            assert_eq!(
                gpu.download(&flat).unwrap().data,
                x.data,
                "flatten keeps the data"
            );
            assert!(cuda::flatten(flat, 3).is_err());
        }
    }
}

// ---------------------------------------------------------------- element-wise

#[test]
fn relu_add_and_casts_round_like_the_host() {
    let Some(gpu) = gpu() else { return };
    let mut rng = StdRng::seed_from_u64(15);
    let mut x = random(&[1000], &mut rng);
    x.data[..6].copy_from_slice(&[f32::NAN, -0.0, 0.0, f32::INFINITY, f32::NEG_INFINITY, 1e-40]);
    for dtype in DTYPES {
        let x = representable(&x, dtype);
        let mut want = x.clone();
        cpu::relu(&mut want);
        let mut gx = gpu.upload(&x, dtype).unwrap();
        gpu.relu(&mut gx).unwrap();
        let got = gpu.download(&gx).unwrap();
        assert_close_tensors(
            &got,
            &want,
            &vec![0.0; want.len()],
            0.0,
            &format!("relu {dtype:?}"),
        );
    }
    // A residual added on the device: the f32 sum rounded once to the
    // storage type, NaN kept.
    let a = random(&[1000], &mut rng);
    for dtype in DTYPES {
        let (x, y) = (representable(&x, dtype), representable(&a, dtype));
        let want: Vec<f32> = x.data.iter().zip(&y.data).map(|(p, q)| p + q).collect();
        let want = representable(&Tensor::new(vec![1000], want), dtype);
        let mut gy = gpu.upload(&y, dtype).unwrap();
        gpu.add(&mut gy, &gpu.upload(&x, dtype).unwrap()).unwrap();
        let got = gpu.download(&gy).unwrap();
        for (i, (g, w)) in got.data.iter().zip(&want.data).enumerate() {
            assert!(
                g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                "add {dtype:?} element {i}: {g} vs {w}"
            );
        }
        let short = gpu.upload(&Tensor::zeros(vec![999]), dtype).unwrap();
        assert!(gpu.add(&mut gy, &short).is_err(), "shapes must agree");
    }
    // Casts on the device round exactly as the host's conversions do.
    let mut values = random(&[4096], &mut rng);
    for (i, v) in values.data.iter_mut().enumerate().take(64) {
        *v = [
            f32::NAN,
            65519.0,
            65520.0,
            1e-8,
            -3.0e38,
            1.0 + 2f32.powi(-9),
        ][i % 6]
            * (i as f32 + 1.0);
    }
    for from in DTYPES {
        let src = representable(&values, from);
        let g = gpu.upload(&src, from).unwrap();
        for to in DTYPES {
            let got = gpu.download_stored(&gpu.cast(&g, to).unwrap()).unwrap();
            let want = Stored::from_f32(&src.data, to);
            let (got, want) = (got.to_f32(), want.to_f32());
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                    "cast {from:?} -> {to:?} of {}: {g} vs {w}",
                    src.data[i]
                );
            }
        }
    }
}

#[test]
fn softmax_matches_the_cpu_on_every_axis() {
    let Some(gpu) = gpu() else { return };
    let mut rng = StdRng::seed_from_u64(16);
    let cases: Vec<(Vec<usize>, usize)> = vec![
        (vec![3, 37], 1),
        (vec![5, 1000], 1),
        (vec![2, 5, 7], 0),
        (vec![2, 5, 7], 1),
        (vec![2, 5, 7], 2),
        (vec![4, 1], 1),
        (vec![0, 3], 1),
    ];
    for (shape, axis) in cases {
        let mut x = random(&shape, &mut rng);
        x.data.iter_mut().for_each(|v| *v *= 8.0);
        for dtype in DTYPES {
            let x = representable(&x, dtype);
            let mut want = x.clone();
            cpu::softmax(&mut want, axis).unwrap();
            let mut gx = gpu.upload(&x, dtype).unwrap();
            gpu.softmax(&mut gx, axis).unwrap();
            let got = gpu.download(&gx).unwrap();
            let scale = vec![1.0; want.len()];
            assert_close_tensors(
                &got,
                &want,
                &scale,
                tolerance(dtype),
                &format!("softmax {shape:?} axis {axis} {dtype:?}"),
            );

            let mut want = x.clone();
            cpu::softmax_coerced(&mut want, axis).unwrap();
            let mut gx = gpu.upload(&x, dtype).unwrap();
            gpu.softmax_coerced(&mut gx, axis).unwrap();
            let got = gpu.download(&gx).unwrap();
            assert_close_tensors(
                &got,
                &want,
                &scale,
                tolerance(dtype),
                &format!("coerced softmax {shape:?} axis {axis} {dtype:?}"),
            );
        }
    }
    let mut x = gpu.full(vec![2, 3], StoredDType::F32, 0.0).unwrap();
    assert!(gpu.softmax(&mut x, 2).is_err());
}

// ---------------------------------------------------------------- layers in a row

/// A small network whose activations never leave the device between
/// layers, against the same layers on the CPU.
#[test]
fn layers_chain_on_the_device() {
    let Some(gpu) = gpu() else { return };
    let cpu = Cpu::new(2);
    let mut rng = StdRng::seed_from_u64(17);
    let x = random(&[3, 3, 12, 12], &mut rng);
    let w1 = random(&[16, 3, 3, 3], &mut rng);
    let b1 = random(&[16], &mut rng);
    let w2 = random(&[32, 8, 3, 3], &mut rng);
    let b2 = random(&[32], &mut rng);
    let wf = random(&[10, 32], &mut rng);
    let bf = random(&[10], &mut rng);
    let conv1 = Conv2d {
        pads: [1; 4],
        relu: true,
        ..Conv2d::default()
    };
    let pool = Pool2d {
        strides: [2, 2],
        ..Pool2d::new(PoolKind::Max, [2, 2])
    };
    let conv2 = Conv2d {
        strides: [2, 2],
        pads: [1; 4],
        groups: 2,
        relu: true,
        ..Conv2d::default()
    };
    let fc = Gemm {
        trans_b: true,
        ..Gemm::default()
    };

    for dtype in DTYPES {
        let r = |t: &Tensor| representable(t, dtype);
        let (x, w1, b1, w2, b2, wf, bf) = (r(&x), r(&w1), r(&b1), r(&w2), r(&b2), r(&wf), r(&bf));
        let h = conv1.run(&cpu, &x, &w1, Some(&b1.data)).unwrap();
        let h = pool.run(&cpu, &h).unwrap();
        let h = conv2.run(&cpu, &h, &w2, Some(&b2.data)).unwrap();
        let h = cpu::flatten(cpu::global_average_pool(&h).unwrap(), 1).unwrap();
        let mut want = fc.run(&cpu, &h, &wf, Some(&bf)).unwrap();
        cpu::softmax(&mut want, 1).unwrap();

        let up = |t: &Tensor| gpu.upload(t, dtype).unwrap();
        let h = gpu
            .conv2d(&conv1, &up(&x), &up(&w1), Some(&up(&b1)))
            .unwrap();
        let h = gpu.pool2d(&pool, &h).unwrap();
        let h = gpu.conv2d(&conv2, &h, &up(&w2), Some(&up(&b2))).unwrap();
        let h = cuda::flatten(gpu.global_average_pool(&h).unwrap(), 1).unwrap();
        let mut y = gpu.gemm(&fc, &h, &up(&wf), Some(&up(&bf))).unwrap();
        gpu.softmax(&mut y, 1).unwrap();
        let got = gpu.download(&y).unwrap();
        // Rounding compounds over five layers in 16 bits.
        let rel = match dtype {
            StoredDType::F32 => 1e-4,
            StoredDType::F16 => 2e-2,
            StoredDType::BF16 => 1e-1,
        };
        assert_close_tensors(
            &got,
            &want,
            &vec![1.0; want.len()],
            rel,
            &format!("network {dtype:?}"),
        );
    }
}

// ---------------------------------------------------------------- graph ops
//
// The ops below allocate their outputs; the emulated driver fills every
// allocation with 0xff bytes (NaN in all three storage types), so an element
// a kernel leaves unwritten fails the comparison there.

/// `t` uploaded as `dtype`, with the values it holds there.
fn upload_as(gpu: &Gpu, t: &Tensor, dtype: StoredDType) -> (GpuTensor, Tensor) {
    let t = representable(t, dtype);
    (gpu.upload(&t, dtype).unwrap(), t)
}

/// `got` (on the device) against the CPU's `want` rounded to `dtype` (so
/// that what overflows 16 bits is infinite on both sides), each element
/// within `tolerance(dtype)` of `|want| + 1`.
fn assert_matches(gpu: &Gpu, got: &GpuTensor, want: &Tensor, dtype: StoredDType, what: &str) {
    let got = gpu.download(got).unwrap();
    let want = &representable(want, dtype);
    let scale: Vec<f32> = want.data.iter().map(|v| v.abs() + 1.0).collect();
    assert_close_tensors(&got, want, &scale, tolerance(dtype), what);
}

/// Bit for bit, NaN meeting NaN: for ops that only move values.
fn assert_same(gpu: &Gpu, got: &GpuTensor, want: &Tensor, what: &str) {
    let got = gpu.download(got).unwrap();
    assert_eq!(got.shape, want.shape, "{what}: shape");
    for (i, (g, w)) in got.data.iter().zip(&want.data).enumerate() {
        assert!(
            g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
            "{what}: element {i} is {g}, want {w}"
        );
    }
}

fn random_scaled(shape: &[usize], factor: f32, rng: &mut StdRng) -> Tensor {
    let mut t = random(shape, rng);
    t.data.iter_mut().for_each(|v| *v *= factor);
    t
}

const SPECIAL: [f32; 9] = [
    f32::NAN,
    f32::INFINITY,
    f32::NEG_INFINITY,
    0.0,
    -0.0,
    1e-30,
    100.0,
    -100.0,
    -12.0,
];

#[test]
fn unary_ops_match_the_cpu() {
    use cpu::Unary::*;
    let Some(gpu) = gpu() else { return };
    let mut rng = StdRng::seed_from_u64(20);
    let mut x = random_scaled(&[3, 337], 4.0, &mut rng);
    x.data[..SPECIAL.len()].copy_from_slice(&SPECIAL);
    let ops = [
        Relu,
        Sigmoid,
        Tanh,
        Erf,
        Sqrt,
        Exp,
        Log,
        Neg,
        Abs,
        Reciprocal,
        LeakyRelu { alpha: 0.1 },
        HardSigmoid {
            alpha: 0.2,
            beta: 0.5,
        },
        HardSwish,
        Clip {
            min: -0.5,
            max: 1.5,
        },
        Clip {
            min: 1.0,
            max: -1.0,
        },
        Gelu { tanh: false },
        Gelu { tanh: true },
        Pow { exponent: 2.0 },
        Pow { exponent: 3.0 },
        Pow { exponent: 0.5 },
        Pow { exponent: -1.5 },
    ];
    for op in ops {
        for dtype in DTYPES {
            let (mut gx, x) = upload_as(&gpu, &x, dtype);
            let want = cpu::unary_tensor(op, x);
            gpu.unary(op, &mut gx).unwrap();
            assert_matches(&gpu, &gx, &want, dtype, &format!("{op:?} {dtype:?}"));
        }
    }
    let mut empty = gpu.full(vec![0, 4], StoredDType::F16, 0.0).unwrap();
    gpu.unary(Exp, &mut empty).unwrap();
    assert_eq!(empty.shape(), [0, 4]);
}

/// Operand shapes that broadcast: equal, trailing, inner and leading size-1
/// axes, scalars, rank 5, and empty.
fn broadcast_cases() -> Vec<(Vec<usize>, Vec<usize>)> {
    vec![
        (vec![2, 3, 4], vec![2, 3, 4]),
        (vec![2, 3, 4], vec![4]),
        (vec![2, 3, 4], vec![3, 1]),
        (vec![1, 3, 1], vec![2, 1, 5]),
        (vec![4, 1], vec![1, 300]),
        (vec![5], vec![]),
        (vec![], vec![2, 2]),
        (vec![], vec![]),
        (vec![2, 1, 4, 1, 3], vec![1, 5, 1, 2, 1]),
        (vec![3, 1, 2, 1, 2], vec![3, 4, 1, 1, 2]),
        (vec![0, 3], vec![1, 3]),
        (vec![3, 1], vec![3, 0]),
    ]
}

const BINARY_OPS: [cpu::Binary; 7] = [
    cpu::Binary::Add,
    cpu::Binary::Sub,
    cpu::Binary::Mul,
    cpu::Binary::Div,
    cpu::Binary::Pow,
    cpu::Binary::Max,
    cpu::Binary::Min,
];

/// Random values, with a NaN in the second place when there is one.
fn with_nan(shape: &[usize], rng: &mut StdRng) -> Tensor {
    let mut t = random_scaled(shape, 2.0, rng);
    if t.len() > 1 {
        t.data[1] = f32::NAN;
    }
    t
}

#[test]
fn binary_ops_broadcast_like_the_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = StdRng::seed_from_u64(21);
    for (sa, sb) in broadcast_cases() {
        let (a, b) = (with_nan(&sa, &mut rng), random_scaled(&sb, 2.0, &mut rng));
        for op in BINARY_OPS {
            for dtype in DTYPES {
                let (ga, a) = upload_as(&gpu, &a, dtype);
                let (gb, b) = upload_as(&gpu, &b, dtype);
                let want = cpu::binary(op, &a, &b).unwrap();
                let got = gpu.binary(op, &ga, &gb).unwrap();
                let what = format!("{op:?} {sa:?} {sb:?} {dtype:?}");
                assert_matches(&gpu, &got, &want, dtype, &what);
                // Swapped, so that each side is the broadcast one.
                let want = cpu::binary(op, &b, &a).unwrap();
                let got = gpu.binary(op, &gb, &ga).unwrap();
                assert_matches(&gpu, &got, &want, dtype, &format!("{what} swapped"));
            }
        }
    }
}

#[test]
fn binary_ops_in_place_match_the_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = StdRng::seed_from_u64(22);
    let cases = [
        (vec![2, 3, 4], vec![2, 3, 4]),
        (vec![2, 3, 4], vec![3, 1]),
        (vec![2, 3, 4], vec![]),
        (vec![2, 5, 1, 3, 2], vec![5, 1, 1, 2]),
        (vec![0, 3], vec![3]),
    ];
    for (sa, sb) in cases {
        let (a, b) = (random_scaled(&sa, 2.0, &mut rng), with_nan(&sb, &mut rng));
        for op in BINARY_OPS {
            for dtype in DTYPES {
                let (mut ga, mut want) = upload_as(&gpu, &a, dtype);
                let (gb, b) = upload_as(&gpu, &b, dtype);
                cpu::binary_in_place(op, &mut want, &b).unwrap();
                gpu.binary_in_place(op, &mut ga, &gb).unwrap();
                let what = format!("{op:?} in place {sa:?} {sb:?} {dtype:?}");
                assert_matches(&gpu, &ga, &want, dtype, &what);
            }
        }
    }
}

#[test]
fn binary_ops_reject_shapes_that_do_not_broadcast() {
    let Some(gpu) = gpu() else { return };
    let f = |shape: Vec<usize>| gpu.full(shape, StoredDType::F32, 1.0).unwrap();
    let add = cpu::Binary::Add;
    let err = gpu.binary(add, &f(vec![2, 3]), &f(vec![4])).unwrap_err();
    assert!(
        matches!(err, KernelError::Invalid { op: "Add", .. }),
        "{err:?}"
    );
    // In place, b must broadcast to a's own shape.
    let err = gpu
        .binary_in_place(cpu::Binary::Mul, &mut f(vec![3, 1]), &f(vec![2, 3, 4]))
        .unwrap_err();
    assert!(
        matches!(err, KernelError::Shape { op: "Mul", .. }),
        "{err:?}"
    );
    let half = gpu.full(vec![3], StoredDType::F16, 1.0).unwrap();
    assert!(matches!(
        gpu.binary(add, &f(vec![3]), &half),
        Err(KernelError::Invalid { .. })
    ));
}

#[test]
fn channel_affine_and_bias_match_the_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = StdRng::seed_from_u64(23);
    for shape in [vec![2, 3, 4, 5], vec![2, 7], vec![1, 4, 3], vec![0, 3, 2]] {
        let c = shape[1];
        let x = with_nan(&shape, &mut rng);
        let (scale, shift) = (random(&[c], &mut rng), random(&[c], &mut rng));
        for dtype in DTYPES {
            let (mut gx, mut want) = upload_as(&gpu, &x, dtype);
            let (gs, scale) = upload_as(&gpu, &scale, dtype);
            let (gt, shift) = upload_as(&gpu, &shift, dtype);
            cpu::channel_affine(&mut want, &scale.data, &shift.data).unwrap();
            gpu.channel_affine(&mut gx, &gs, &gt).unwrap();
            let what = format!("channel affine {shape:?} {dtype:?}");
            assert_matches(&gpu, &gx, &want, dtype, &what);
        }
        for axis in 0..shape.len() {
            let bias = random(&[shape[axis]], &mut rng);
            for dtype in DTYPES {
                let (mut gx, x) = upload_as(&gpu, &x, dtype);
                let (gb, bias) = upload_as(&gpu, &bias, dtype);
                // Written out: the bias broadcast along the axis.
                let mut bshape = vec![1; shape.len()];
                bshape[axis] = shape[axis];
                let bias = Tensor::new(bshape, bias.data);
                let want = cpu::binary(cpu::Binary::Add, &x, &bias).unwrap();
                gpu.add_bias(&mut gx, &gb, axis).unwrap();
                let what = format!("bias on axis {axis} of {shape:?} {dtype:?}");
                assert_matches(&gpu, &gx, &want, dtype, &what);
            }
        }
    }
    let f = |shape: Vec<usize>| gpu.full(shape, StoredDType::F32, 1.0).unwrap();
    let mut x = f(vec![2, 3, 4]);
    assert!(matches!(
        gpu.channel_affine(&mut x, &f(vec![4]), &f(vec![3])),
        Err(KernelError::Shape { .. })
    ));
    assert!(matches!(
        gpu.channel_affine(&mut f(vec![3]), &f(vec![3]), &f(vec![3])),
        Err(KernelError::Shape { .. })
    ));
    assert!(matches!(
        gpu.add_bias(&mut x, &f(vec![3]), 2),
        Err(KernelError::Shape { .. })
    ));
    assert!(matches!(
        gpu.add_bias(&mut x, &f(vec![3]), 3),
        Err(KernelError::Shape { .. })
    ));
}

#[test]
fn transpose_slice_and_expand_move_values_like_the_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = StdRng::seed_from_u64(24);
    let transposes: Vec<(Vec<usize>, Vec<usize>)> = vec![
        (vec![7], vec![0]),
        (vec![3, 5], vec![1, 0]),
        (vec![2, 3, 4], vec![2, 0, 1]),
        (vec![2, 1, 3, 4], vec![0, 2, 1, 3]),
        (vec![2, 3, 1, 4, 5], vec![4, 2, 0, 3, 1]),
        (vec![40, 33], vec![1, 0]),
        (vec![0, 3], vec![1, 0]),
    ];
    for (shape, perm) in transposes {
        let x = with_nan(&shape, &mut rng);
        for dtype in DTYPES {
            let (gx, x) = upload_as(&gpu, &x, dtype);
            let want = cpu::transpose(&x, &perm).unwrap();
            let got = gpu.transpose(&gx, &perm).unwrap();
            assert_same(
                &gpu,
                &got,
                &want,
                &format!("transpose {shape:?} {perm:?} {dtype:?}"),
            );
        }
    }
    type SliceCase = (Vec<usize>, Vec<i64>, Vec<i64>, Vec<i64>);
    let slices: Vec<SliceCase> = vec![
        (vec![10], vec![2], vec![8], vec![1]),
        (vec![10], vec![9], vec![-1], vec![-1]),
        (vec![10], vec![8], vec![0], vec![-3]),
        (vec![4, 6], vec![1, 5], vec![3, 0], vec![1, -2]),
        (vec![3, 4, 5], vec![0, 3, 1], vec![3, -1, 5], vec![2, -1, 3]),
        (
            vec![2, 3, 4, 5, 2],
            vec![1, 0, 3, 4, 0],
            vec![2, 3, -1, 0, 2],
            vec![1, 2, -2, -1, 1],
        ),
        (vec![4, 5], vec![2, 0], vec![2, 5], vec![1, 1]),
    ];
    for (shape, starts, ends, steps) in slices {
        let x = with_nan(&shape, &mut rng);
        for dtype in DTYPES {
            let (gx, x) = upload_as(&gpu, &x, dtype);
            let want = cpu::slice(&x, &starts, &ends, &steps).unwrap();
            let got = gpu.slice(&gx, &starts, &ends, &steps).unwrap();
            let what = format!("slice {shape:?} {starts:?} {ends:?} {steps:?} {dtype:?}");
            assert_same(&gpu, &got, &want, &what);
        }
    }
    let expands: Vec<(Vec<usize>, Vec<usize>)> = vec![
        (vec![3, 1], vec![2, 3, 4]),
        (vec![1], vec![5]),
        (vec![], vec![2, 3]),
        (vec![2, 1, 3], vec![1, 4, 1]),
        (vec![1, 3, 1, 2, 1], vec![2, 1, 4, 1, 3]),
        (vec![3, 1], vec![0, 1, 1]),
    ];
    for (shape, to) in expands {
        let x = with_nan(&shape, &mut rng);
        for dtype in DTYPES {
            let (gx, x) = upload_as(&gpu, &x, dtype);
            let want = cpu::expand(&x, &to).unwrap();
            let got = gpu.expand(&gx, &to).unwrap();
            assert_same(
                &gpu,
                &got,
                &want,
                &format!("expand {shape:?} to {to:?} {dtype:?}"),
            );
        }
    }
    let x = gpu.full(vec![2, 3], StoredDType::F32, 1.0).unwrap();
    for perm in [vec![0], vec![0, 0], vec![0, 2]] {
        assert!(matches!(
            gpu.transpose(&x, &perm),
            Err(KernelError::Invalid { .. })
        ));
    }
    for (starts, ends, steps) in [
        (vec![0], vec![1], vec![1]),
        (vec![0, 0], vec![2, 3], vec![1, 0]),
        (vec![0, 0], vec![3, 3], vec![1, 1]),
        (vec![1, 3], vec![0, -1], vec![-1, -1]),
    ] {
        assert!(matches!(
            gpu.slice(&x, &starts, &ends, &steps),
            Err(KernelError::Invalid { .. })
        ));
    }
    assert!(matches!(
        gpu.expand(&x, &[4, 3]),
        Err(KernelError::Invalid { .. })
    ));
}

#[test]
fn concat_split_and_gather_match_the_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = StdRng::seed_from_u64(25);
    let base = [2, 3, 4, 2];
    for axis in 0..base.len() {
        let extents = [2, 0, 1, 3];
        let parts: Vec<Tensor> = extents
            .iter()
            .map(|&e| {
                let mut s = base.to_vec();
                s[axis] = e;
                with_nan(&s, &mut rng)
            })
            .collect();
        for dtype in DTYPES {
            let uploaded: Vec<(GpuTensor, Tensor)> =
                parts.iter().map(|p| upload_as(&gpu, p, dtype)).collect();
            let host: Vec<&Tensor> = uploaded.iter().map(|(_, t)| t).collect();
            let device: Vec<&GpuTensor> = uploaded.iter().map(|(g, _)| g).collect();
            let want = cpu::concat(&host, axis).unwrap();
            let got = gpu.concat(&device, axis).unwrap();
            assert_same(
                &gpu,
                &got,
                &want,
                &format!("concat on axis {axis} {dtype:?}"),
            );

            let (gx, x) = upload_as(&gpu, &want, dtype);
            let want = cpu::split(&x, axis, &extents).unwrap();
            let got = gpu.split(&gx, axis, &extents).unwrap();
            assert_eq!(got.len(), want.len());
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_same(
                    &gpu,
                    g,
                    w,
                    &format!("split part {i} on axis {axis} {dtype:?}"),
                );
            }
        }
    }
    // (shape, axis, indices, indices' shape)
    type GatherCase = (Vec<usize>, usize, Vec<usize>, Vec<usize>);
    let gathers: Vec<GatherCase> = vec![
        (vec![5, 3], 0, vec![4, 0, 4], vec![3]),
        (vec![5, 3], 1, vec![2], vec![]),
        (vec![2, 6, 3], 1, vec![5, 1, 0, 2, 2, 3], vec![2, 3]),
        (vec![2, 3, 4], 2, vec![3, 0], vec![1, 2]),
        (vec![4, 3], 0, vec![], vec![0]),
        (vec![100, 16], 0, vec![99, 3, 50, 0, 7], vec![5, 1]),
    ];
    for (shape, axis, indices, ishape) in gathers {
        let x = with_nan(&shape, &mut rng);
        for dtype in DTYPES {
            let (gx, x) = upload_as(&gpu, &x, dtype);
            let want = cpu::gather(&x, axis, &indices, &ishape).unwrap();
            let got = gpu.gather(&gx, axis, &indices, &ishape).unwrap();
            let what = format!("gather {shape:?} axis {axis} {indices:?} {ishape:?} {dtype:?}");
            assert_same(&gpu, &got, &want, &what);
        }
    }
    let f = |shape: Vec<usize>| gpu.full(shape, StoredDType::F32, 1.0).unwrap();
    let (a, b) = (f(vec![2, 3]), f(vec![2, 4]));
    assert!(matches!(
        gpu.concat(&[&a, &b], 0),
        Err(KernelError::Shape { .. })
    ));
    assert!(matches!(
        gpu.concat(&[&a, &b], 2),
        Err(KernelError::Shape { .. })
    ));
    assert!(matches!(
        gpu.concat(&[], 0),
        Err(KernelError::Invalid { .. })
    ));
    let h = gpu.full(vec![2, 3], StoredDType::BF16, 1.0).unwrap();
    assert!(matches!(
        gpu.concat(&[&a, &h], 0),
        Err(KernelError::Invalid { .. })
    ));
    assert!(matches!(
        gpu.split(&b, 1, &[1, 2]),
        Err(KernelError::Invalid { .. })
    ));
    assert!(matches!(
        gpu.split(&b, 2, &[2]),
        Err(KernelError::Shape { .. })
    ));
    assert!(matches!(
        gpu.gather(&a, 1, &[3], &[1]),
        Err(KernelError::Invalid { .. })
    ));
    assert!(matches!(
        gpu.gather(&a, 0, &[0, 1], &[3]),
        Err(KernelError::Shape { .. })
    ));
}

const REDUCE_OPS: [cpu::Reduce; 7] = [
    cpu::Reduce::Mean,
    cpu::Reduce::Sum,
    cpu::Reduce::Max,
    cpu::Reduce::Min,
    cpu::Reduce::Prod,
    cpu::Reduce::L2,
    cpu::Reduce::SumSquare,
];

/// Reductions of every kind of layout: trailing, leading, middle and
/// scattered axes, all or none named, long ones that a warp or a block
/// shares, and empty ones.
fn reduce_cases() -> Vec<(Vec<usize>, Vec<usize>)> {
    vec![
        (vec![3, 4, 5], vec![]),
        (vec![3, 4, 5], vec![0]),
        (vec![3, 4, 5], vec![1]),
        (vec![3, 4, 5], vec![2]),
        (vec![3, 4, 5], vec![0, 2]),
        (vec![3, 4, 5], vec![2, 1]),
        (vec![2, 3, 1, 5, 2], vec![0, 2, 4]),
        (vec![2, 3, 4, 5, 2], vec![1, 3]),
        (vec![7], vec![0]),
        (vec![64, 100], vec![1]),
        (vec![100, 40], vec![0]),
        (vec![3, 40, 7], vec![1]),
        (vec![2, 5000], vec![1]),
        (vec![9000], vec![]),
        (vec![5000, 3], vec![0]),
        (vec![0, 3], vec![0]),
        (vec![3, 0], vec![1]),
        (vec![3, 0], vec![0]),
    ]
}

#[test]
fn reductions_match_the_cpu_over_any_axes() {
    let Some(gpu) = gpu() else { return };
    let mut rng = StdRng::seed_from_u64(26);
    for (shape, axes) in reduce_cases() {
        let mut x = random(&shape, &mut rng);
        for op in REDUCE_OPS {
            let x = if op == cpu::Reduce::Prod {
                // Products of values near 1 neither vanish nor overflow.
                let mut p = x.clone();
                p.data.iter_mut().for_each(|v| *v = 1.0 + *v / 64.0);
                p
            } else {
                x.clone()
            };
            for dtype in DTYPES {
                let (gx, x) = upload_as(&gpu, &x, dtype);
                for keepdims in [false, true] {
                    let want = cpu::reduce(op, &x, &axes, keepdims).unwrap();
                    let got = gpu.reduce(op, &gx, &axes, keepdims).unwrap();
                    // Relative to what was summed (or multiplied).
                    let magnitude = match op {
                        cpu::Reduce::Max | cpu::Reduce::Min | cpu::Reduce::Prod => want.clone(),
                        cpu::Reduce::Mean | cpu::Reduce::Sum => {
                            cpu::reduce(op, &abs(&x), &axes, keepdims).unwrap()
                        }
                        _ => want.clone(),
                    };
                    let scale: Vec<f32> = magnitude.data.iter().map(|v| v.abs()).collect();
                    let what =
                        format!("{op:?} {shape:?} axes {axes:?} keepdims {keepdims} {dtype:?}");
                    let got = gpu.download(&got).unwrap();
                    assert_close_tensors(&got, &want, &scale, tolerance(dtype), &what);
                }
            }
        }
        // NaN wins every reduction it takes part in, Max and Min included.
        if x.len() > 3 {
            x.data[3] = f32::NAN;
            for op in REDUCE_OPS {
                for dtype in DTYPES {
                    let (gx, x) = upload_as(&gpu, &x, dtype);
                    let want = cpu::reduce(op, &x, &axes, false).unwrap();
                    let got = gpu
                        .download(&gpu.reduce(op, &gx, &axes, false).unwrap())
                        .unwrap();
                    for (i, (g, w)) in got.data.iter().zip(&want.data).enumerate() {
                        assert_eq!(
                            g.is_nan(),
                            w.is_nan(),
                            "{op:?} {shape:?} axes {axes:?} {dtype:?} with a NaN: element {i} is {g}, want {w}"
                        );
                    }
                }
            }
        }
    }
    let x = gpu.full(vec![2, 3], StoredDType::F32, 1.0).unwrap();
    for axes in [vec![2], vec![1, 1]] {
        assert!(matches!(
            gpu.reduce(cpu::Reduce::Sum, &x, &axes, true),
            Err(KernelError::Invalid {
                op: "ReduceSum",
                ..
            })
        ));
    }
}

#[test]
fn layer_norm_matches_the_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = StdRng::seed_from_u64(27);
    let cases: Vec<(Vec<usize>, usize)> = vec![
        (vec![4, 37], 1),
        (vec![2, 3, 64], 2),
        (vec![2, 3, 4], 1),
        (vec![3, 5], 0),
        (vec![2, 1000], 1),
        (vec![1, 1], 1),
        (vec![0, 8], 1),
    ];
    for (shape, axis) in cases {
        let block: usize = shape[axis..].iter().product();
        // A large mean: a one-pass variance would cancel it away.
        let mut x = random(&shape, &mut rng);
        x.data.iter_mut().for_each(|v| *v += 100.0);
        if x.len() > 2 * block {
            x.data[block + 1] = f32::NAN;
        }
        let scale = random(&[block], &mut rng);
        let bias = random(&[block], &mut rng);
        for dtype in DTYPES {
            let (gx, x) = upload_as(&gpu, &x, dtype);
            let (gs, scale) = upload_as(&gpu, &scale, dtype);
            let (gb, bias) = upload_as(&gpu, &bias, dtype);
            for (with_scale, with_bias) in
                [(false, false), (true, false), (true, true), (false, true)]
            {
                let s = with_scale.then_some(&scale.data[..]);
                let b = with_bias.then_some(&bias.data[..]);
                let want = cpu::layer_norm(&x, axis, s, b, 1e-5).unwrap();
                let got = gpu
                    .layer_norm(
                        &gx,
                        axis,
                        with_scale.then_some(&gs),
                        with_bias.then_some(&gb),
                        1e-5,
                    )
                    .unwrap();
                let what = format!("layer norm {shape:?} axis {axis} scale {with_scale} bias {with_bias} {dtype:?}");
                assert_matches(&gpu, &got, &want, dtype, &what);
            }
        }
    }
    let x = gpu.full(vec![2, 3, 4], StoredDType::F32, 1.0).unwrap();
    let s = gpu.full(vec![4], StoredDType::F32, 1.0).unwrap();
    assert!(matches!(
        gpu.layer_norm(&x, 1, Some(&s), None, 1e-5),
        Err(KernelError::Shape { .. })
    ));
    assert!(matches!(
        gpu.layer_norm(&x, 3, None, None, 1e-5),
        Err(KernelError::Shape { .. })
    ));
}

#[test]
fn batched_matmul_matches_the_cpu() {
    let Some(mut gpu) = gpu() else { return };
    let cpu = Cpu::new(2);
    let mut rng = StdRng::seed_from_u64(28);
    let cases: Vec<(Vec<usize>, Vec<usize>)> = vec![
        (vec![3, 4], vec![4, 5]),
        (vec![4], vec![4, 5]),
        (vec![3, 4], vec![4]),
        (vec![4], vec![4]),
        (vec![2, 3, 4], vec![4, 5]),
        (vec![2, 3, 4], vec![2, 4, 5]),
        (vec![2, 1, 3, 4], vec![5, 4, 6]),
        (vec![1, 3, 4], vec![2, 4, 6]),
        (vec![3, 4], vec![2, 2, 4, 3]),
        (vec![7], vec![3, 7, 2]),
        (vec![2, 1, 1, 5], vec![3, 5, 1]),
        (vec![2, 130, 70], vec![70, 135]),
        (vec![2, 1, 129, 17], vec![3, 17, 140]),
        (vec![3, 0], vec![0, 4]),
        (vec![0, 3, 4], vec![4, 5]),
        (vec![1, 3, 4], vec![0, 4, 5]),
    ];
    for (sa, sb) in cases {
        let (a, b) = (random(&sa, &mut rng), random(&sb, &mut rng));
        for dtype in DTYPES {
            let (ga, a) = upload_as(&gpu, &a, dtype);
            let (gb, b) = upload_as(&gpu, &b, dtype);
            let want = cpu::batched_matmul(&cpu, &a, &b).unwrap();
            let scale = cpu::batched_matmul(&cpu, &abs(&a), &abs(&b)).unwrap();
            for tc in tensor_core_settings(&gpu) {
                gpu.set_tensor_cores(tc);
                let got = gpu
                    .download(&gpu.batched_matmul(&ga, &gb).unwrap())
                    .unwrap();
                let what = format!("matmul {sa:?} x {sb:?} {dtype:?} tensor cores {tc}");
                assert_close_tensors(&got, &want, &scale.data, tolerance(dtype), &what);
            }
        }
    }
    let f = |shape: Vec<usize>| gpu.full(shape, StoredDType::F32, 1.0).unwrap();
    let shape_errors = [
        (vec![3, 4], vec![5, 2]),
        (vec![], vec![4, 2]),
        (vec![4], vec![]),
    ];
    for (sa, sb) in shape_errors {
        assert!(matches!(
            gpu.batched_matmul(&f(sa), &f(sb)),
            Err(KernelError::Shape { .. })
        ));
    }
    assert!(matches!(
        gpu.batched_matmul(&f(vec![2, 3, 4]), &f(vec![3, 4, 5])),
        Err(KernelError::Invalid { .. })
    ));
    let h = gpu.full(vec![4, 2], StoredDType::F16, 1.0).unwrap();
    assert!(matches!(
        gpu.batched_matmul(&f(vec![3, 4]), &h),
        Err(KernelError::Invalid { .. })
    ));
}

#[test]
fn graph_op_kernels_refuse_too_many_unmergeable_axes() {
    let Some(gpu) = gpu() else { return };
    // Nine axes of 2 reversed: no neighbours merge.
    let x = gpu.full(vec![2; 9], StoredDType::F32, 1.0).unwrap();
    let perm: Vec<usize> = (0..9).rev().collect();
    assert!(matches!(
        gpu.transpose(&x, &perm),
        Err(KernelError::Invalid { .. })
    ));
    // Nine that do merge are fine.
    let id: Vec<usize> = (0..9).collect();
    assert_eq!(gpu.transpose(&x, &id).unwrap().shape(), [2; 9]);
}
