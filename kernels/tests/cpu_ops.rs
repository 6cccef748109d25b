//! Every CPU op against a straightforward f64 reference written here, on
//! awkward shapes. Outputs are poisoned (NaN) first, so an element the kernel
//! forgets to write fails the comparison.

mod common;

use common::{assert_close, conv_reference, gemm_reference, pool_reference, random};
use mpinfer_kernels::cpu::*;
use mpinfer_kernels::{Stored, StoredDType, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

// ---------------------------------------------------------------- conv

struct ConvCase {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    m: usize,
    k: [usize; 2],
    conv: Conv2d,
}

impl ConvCase {
    /// A random input, weight and bias of this case's shapes.
    fn operands(&self, rng: &mut StdRng) -> (Tensor, Tensor, Vec<f32>) {
        let x = random(&[self.n, self.c, self.h, self.w], rng);
        let w = random(
            &[self.m, self.c / self.conv.groups, self.k[0], self.k[1]],
            rng,
        );
        let bias = (0..self.m).map(|_| rng.gen_range(-1.0..1.0)).collect();
        (x, w, bias)
    }
}

fn conv_cases() -> Vec<ConvCase> {
    let c = |n, c, h, w, m, k: [usize; 2], conv| ConvCase {
        n,
        c,
        h,
        w,
        m,
        k,
        conv,
    };
    let d = Conv2d::default();
    vec![
        c(2, 1, 32, 32, 32, [3, 3], d), // the seed network's first layer
        c(3, 32, 30, 30, 64, [3, 3], Conv2d { relu: true, ..d }), // and its second, fused ReLU
        c(
            1,
            3,
            7,
            9,
            5,
            [3, 2],
            Conv2d {
                pads: [1, 0, 2, 1],
                ..d
            },
        ), // asymmetric pads, odd sizes
        c(
            2,
            4,
            11,
            10,
            6,
            [3, 3],
            Conv2d {
                strides: [2, 2],
                pads: [1; 4],
                ..d
            },
        ),
        c(
            1,
            2,
            13,
            12,
            3,
            [3, 3],
            Conv2d {
                dilations: [2, 2],
                pads: [2, 1, 2, 1],
                ..d
            },
        ),
        c(
            2,
            6,
            9,
            9,
            4,
            [3, 3],
            Conv2d {
                groups: 2,
                strides: [2, 1],
                ..d
            },
        ), // groups
        c(
            1,
            8,
            10,
            10,
            8,
            [3, 3],
            Conv2d {
                groups: 8,
                pads: [1; 4],
                ..d
            },
        ), // depthwise
        c(2, 16, 5, 5, 7, [1, 1], d), // 1x1, read directly
        c(
            1,
            4,
            6,
            6,
            3,
            [1, 1],
            Conv2d {
                strides: [2, 2],
                ..d
            },
        ), // 1x1 strided
        c(0, 3, 8, 8, 4, [3, 3], d),  // batch 0
        c(
            1,
            3,
            2,
            2,
            4,
            [3, 3],
            Conv2d {
                pads: [1; 4],
                strides: [3, 3],
                ..d
            },
        ),
        // 3x3 stride 1: odd output sizes, asymmetric pads, tiny images, fused ReLU.
        c(6, 8, 6, 7, 3, [3, 3], Conv2d { pads: [1; 4], ..d }), // more images than one GEMM group
        c(
            2,
            9,
            7,
            8,
            5,
            [3, 3],
            Conv2d {
                pads: [1, 2, 0, 1],
                ..d
            },
        ),
        c(
            1,
            12,
            5,
            5,
            3,
            [3, 3],
            Conv2d {
                pads: [1; 4],
                relu: true,
                ..d
            },
        ),
        c(3, 8, 3, 3, 4, [3, 3], d),
        c(
            1,
            16,
            4,
            9,
            7,
            [3, 3],
            Conv2d {
                pads: [2, 0, 2, 0],
                ..d
            },
        ),
        // Winograd in blocks of tiles: rows of more than 16 tiles, odd
        // output sizes, output channels not a multiple of 8, padding on
        // every side, and images of fewer tiles than a block, so that a
        // block spans several images.
        c(
            3,
            9,
            37,
            35,
            13,
            [3, 3],
            Conv2d {
                pads: [1, 2, 1, 0],
                relu: true,
                ..d
            },
        ),
        c(5, 33, 6, 5, 17, [3, 3], Conv2d { pads: [1; 4], ..d }),
        c(2, 8, 4, 4, 1, [3, 3], d), // one tile per image, one output channel
        // Few input channels, stride 1, rows that fill their vectors: rows of
        // 46 (a 32-column pass, then 16), of 15 and 31, kernels wider than
        // tall and wider than a vector, 64 taps (the most taken direct).
        c(2, 3, 9, 46, 11, [3, 3], Conv2d { pads: [1; 4], ..d }),
        c(
            1,
            7,
            5,
            14,
            9,
            [2, 3],
            Conv2d {
                pads: [0, 2, 1, 1],
                relu: true,
                ..d
            },
        ),
        c(
            1,
            1,
            3,
            40,
            3,
            [2, 20],
            Conv2d {
                pads: [0, 5, 1, 5],
                ..d
            },
        ),
        c(2, 4, 7, 33, 5, [4, 4], d),
        // Kernels wider than the input (ConvNeXt's 7x7 depthwise on a 2x2
        // map): some taps never land inside the image.
        c(
            2,
            4,
            2,
            2,
            4,
            [7, 7],
            Conv2d {
                pads: [3; 4],
                groups: 4,
                ..d
            },
        ),
        c(1, 3, 2, 3, 5, [7, 7], Conv2d { pads: [3; 4], ..d }),
    ]
}

/// The tests that take the AVX-512 kernels where the CPU has them.
const PATH_TESTS: [&str; 4] = [
    "conv2d_matches_the_reference",
    "conv2d_epilogue_matches_the_reference",
    "pooling_matches_the_reference",
    "a_nan_input_stays_in_its_own_output_row",
];

/// Runs [`PATH_TESTS`] again in a child process with `MPINFER_CPU_AVX512`
/// set to `choice`, and fails with the child's output unless all of them
/// pass. The child records its skips in a file of its own, not the run's
/// log; a skip there is reported as a skip of the calling test.
fn rerun_path_tests(choice: &str) {
    let skips = std::env::temp_dir().join(format!(
        "mpinfer-cpu-ops-{}-avx512-{choice}.skips",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&skips);
    // `--exact` keeps the child from running the tests that spawn children.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(PATH_TESTS)
        .args(["--exact", "--test-threads", "1"])
        .env("MPINFER_CPU_AVX512", choice)
        .env(mpinfer_testkit::SKIP_LOG, &skips)
        .output()
        .unwrap();
    let child_skips = std::fs::read_to_string(&skips).unwrap_or_default();
    let _ = std::fs::remove_file(&skips);
    // Indented, so that the child's `test result:` lines in a failure
    // message are not read as this run's.
    let indent = |bytes: &[u8]| {
        String::from_utf8_lossy(bytes)
            .lines()
            .map(|l| format!("    | {l}\n"))
            .collect::<String>()
    };
    let (stdout, stderr) = (indent(&out.stdout), indent(&out.stderr));
    assert!(
        out.status.success(),
        "with MPINFER_CPU_AVX512={choice}:\n{stdout}{stderr}"
    );
    assert!(
        stdout.contains(&format!("{} passed", PATH_TESTS.len())),
        "with MPINFER_CPU_AVX512={choice} the child ran other tests than asked:\n{stdout}"
    );
    if !child_skips.trim().is_empty() {
        mpinfer_testkit::skip(&format!(
            "with MPINFER_CPU_AVX512={choice}: {}",
            child_skips.trim().replace('\n', "; ")
        ));
    }
}

/// CPUs with AVX-512 take its kernels by default: run the tests that reach
/// them again on the portable kernels, so those stay covered there too.
#[test]
fn portable_kernels_match_the_reference() {
    if std::env::var_os("MPINFER_CPU_AVX512").is_some_and(|v| v == "0") {
        mpinfer_testkit::skip(
            "MPINFER_CPU_AVX512=0 is set: this run's own tests already take the portable kernels",
        );
        return;
    }
    rerun_path_tests("0");
}

/// The AVX-512 kernels, whatever `MPINFER_CPU_AVX512` says for the rest of
/// the run: only a CPU with `avx512f` can run them.
#[test]
fn avx512_kernels_match_the_reference() {
    #[cfg(target_arch = "x86_64")]
    let has_avx512f = std::arch::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    let has_avx512f = false;
    if !has_avx512f {
        mpinfer_testkit::skip("CPU lacks AVX-512F: kernels/src/cpu/avx512.rs not exercised");
        return;
    }
    rerun_path_tests("1");
}

#[test]
fn conv2d_matches_the_reference() {
    let mut rng = StdRng::seed_from_u64(1);
    for threads in [1, 3] {
        let cpu = Cpu::new(threads);
        for (idx, case) in conv_cases().into_iter().enumerate() {
            let (x, w, bias) = case.operands(&mut rng);
            for with_bias in [false, true] {
                let b = with_bias.then_some(&bias[..]);
                let (shape, want, scale) = conv_reference(&x, &w, b, &case.conv);
                assert_eq!(
                    case.conv.output_shape(&x.shape, &w.shape).unwrap(),
                    shape,
                    "case {idx}"
                );
                let mut got = vec![f32::NAN; want.len()];
                case.conv.run_into(&cpu, &x, &w, b, &mut got).unwrap();
                assert_close(
                    &got,
                    &want,
                    &scale,
                    1e-5,
                    &format!("conv case {idx}, bias {with_bias}, {threads} threads"),
                );
            }
        }
    }
}

/// `op` in f64, with the NaN handling ONNX Runtime has: NaN stays NaN
/// through every one of these, ReLU included.
fn activation_reference(op: Unary, v: f64) -> f64 {
    match op {
        Unary::Relu => {
            if v < 0.0 {
                0.0
            } else {
                v
            }
        }
        Unary::LeakyRelu { alpha } => {
            if v < 0.0 {
                alpha as f64 * v
            } else {
                v
            }
        }
        Unary::Clip { min, max } if !v.is_nan() => v.max(min as f64).min(max as f64),
        Unary::Clip { .. } => v,
        Unary::HardSwish => v * (v / 6.0 + 0.5).clamp(0.0, 1.0),
        Unary::Sigmoid => 1.0 / (1.0 + (-v).exp()),
        other => panic!("no reference for {other:?}"),
    }
}

/// Residuals and activations applied by the convolution itself, against
/// the f64 convolution plus the residual, then the activations in f64. The
/// residual carries NaNs, which must come through every activation.
#[test]
fn conv2d_epilogue_matches_the_reference() {
    let mut rng = StdRng::seed_from_u64(11);
    let chains: [&[Unary]; 7] = [
        &[],
        &[Unary::Relu],
        &[Unary::Clip {
            min: -0.5,
            max: 0.75,
        }],
        &[Unary::HardSwish],
        &[Unary::Sigmoid],
        &[Unary::LeakyRelu { alpha: 0.1 }],
        &[
            Unary::LeakyRelu { alpha: 0.3 },
            Unary::Clip { min: 0.0, max: 6.0 },
        ],
    ];
    for threads in [1, 3] {
        let cpu = Cpu::new(threads);
        for (idx, case) in conv_cases().into_iter().enumerate() {
            let (x, w, bias) = case.operands(&mut rng);
            let b = (idx % 2 == 0).then_some(&bias[..]);
            let (shape, conv, conv_scale) = conv_reference(&x, &w, b, &case.conv);
            let mut residual = random(&shape, &mut rng).data;
            residual.iter_mut().step_by(37).for_each(|v| *v = f32::NAN);
            for with_residual in [false, true] {
                for acts in chains {
                    if !with_residual && acts.is_empty() {
                        continue;
                    }
                    let r = |i: usize| with_residual.then(|| residual[i] as f64);
                    let want: Vec<f64> = (0..conv.len())
                        .map(|i| {
                            let v = conv[i] + r(i).unwrap_or(0.0);
                            acts.iter().fold(v, |v, &a| activation_reference(a, v))
                        })
                        .collect();
                    // Every activation here changes a value by at most 1.5×
                    // its change.
                    let scale: Vec<f64> = (0..conv.len())
                        .map(|i| 2.0 * (conv_scale[i] + r(i).map_or(0.0, f64::abs)))
                        .collect();
                    let epilogue = Epilogue {
                        residual: with_residual.then_some(&residual[..]),
                        acts,
                    };
                    let mut got = vec![f32::NAN; want.len()];
                    case.conv
                        .run_into_with(&cpu, &x, &w, b, epilogue, &mut got)
                        .unwrap();
                    let what = format!(
                        "conv case {idx}, residual {with_residual}, {acts:?}, {threads} threads"
                    );
                    assert_close(&got, &want, &scale, 1e-5, &what);
                }
            }
        }
    }
}

#[test]
fn conv2d_rejects_bad_shapes_with_a_reason() {
    let cpu = Cpu::new(1);
    let x = Tensor::zeros(vec![1, 3, 5, 5]);
    let e = Conv2d::default()
        .run(&cpu, &x, &Tensor::zeros(vec![4, 2, 3, 3]), None)
        .unwrap_err();
    assert!(
        e.to_string().contains("weight has shape [4, 2, 3, 3]"),
        "{e}"
    );
    let e = Conv2d::default()
        .run(&cpu, &x, &Tensor::zeros(vec![4, 3, 7, 7]), None)
        .unwrap_err();
    assert!(e.to_string().contains("kernel"), "{e}");
    let e = Conv2d::default()
        .run(&cpu, &x, &Tensor::zeros(vec![4, 3, 3, 3]), Some(&[0.0; 3]))
        .unwrap_err();
    assert!(e.to_string().contains("bias"), "{e}");
    let w = Tensor::zeros(vec![4, 3, 3, 3]);
    let mut y = vec![0.0; 4 * 9];
    let epilogue = Epilogue {
        residual: Some(&[0.0; 35]),
        acts: &[],
    };
    let e = Conv2d::default()
        .run_into_with(&cpu, &x, &w, None, epilogue, &mut y)
        .unwrap_err();
    assert!(e.to_string().contains("residual"), "{e}");
}

#[test]
fn weights_stored_in_16_bits_stay_within_their_precision() {
    let mut rng = StdRng::seed_from_u64(2);
    let cpu = Cpu::new(2);
    let x = random(&[2, 8, 9, 9], &mut rng);
    let w = random(&[6, 8, 3, 3], &mut rng);
    let conv = Conv2d::default();
    let (_, want, scale) = conv_reference(&x, &w, None, &conv);
    for (dtype, rel) in [
        (StoredDType::F16, 2f64.powi(-10)),
        (StoredDType::BF16, 2f64.powi(-7)),
    ] {
        let stored = Stored::from_f32(&w.data, dtype);
        assert_eq!(stored.dtype(), dtype);
        assert_eq!(stored.len(), w.len());
        let w16 = Tensor::new(w.shape.clone(), stored.to_f32());
        let got = conv.run(&cpu, &x, &w16, None).unwrap();
        assert_close(&got.data, &want, &scale, rel, &format!("{dtype:?} weights"));
    }
}

// ---------------------------------------------------------------- gemm

#[test]
fn gemm_matches_the_reference_with_every_attribute() {
    let mut rng = StdRng::seed_from_u64(3);
    for threads in [1, 2, 5] {
        let cpu = Cpu::new(threads);
        for &(m, k, n) in &[
            (1, 1, 1),
            (7, 13, 5),
            (37, 3136, 100),
            (100, 100, 10),
            (0, 4, 3),
            (3, 0, 4),
            (65, 17, 1),
        ] {
            for trans_a in [false, true] {
                for trans_b in [false, true] {
                    for (alpha, beta) in [(1.0f32, 1.0f32), (0.5, -2.0), (1.0, 0.0)] {
                        for c_shape in [
                            None,
                            Some(vec![n]),
                            Some(vec![m, n]),
                            Some(vec![m, 1]),
                            Some(vec![]),
                        ] {
                            for relu in [false, true] {
                                let a = random(&if trans_a { [k, m] } else { [m, k] }, &mut rng);
                                let b = random(&if trans_b { [n, k] } else { [k, n] }, &mut rng);
                                let c = c_shape.clone().map(|s| random(&s, &mut rng));
                                let g = Gemm {
                                    trans_a,
                                    trans_b,
                                    alpha,
                                    beta,
                                    relu,
                                };
                                let (want, scale) = gemm_reference(&a, &b, c.as_ref(), &g);
                                let mut got = vec![f32::NAN; m * n];
                                g.run_into(&cpu, &a, &b, c.as_ref(), &mut got).unwrap();
                                let what = format!("gemm {m}x{k}x{n} tA={trans_a} tB={trans_b} a={alpha} b={beta} C={c_shape:?} relu={relu} threads={threads}");
                                assert_close(&got, &want, &scale, 1e-5, &what);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn gemm_rejects_mismatched_operands() {
    let cpu = Cpu::new(1);
    let e = Gemm::default()
        .run(
            &cpu,
            &Tensor::zeros(vec![2, 3]),
            &Tensor::zeros(vec![4, 5]),
            None,
        )
        .unwrap_err();
    assert!(e.to_string().contains("contracted"), "{e}");
    let e = Gemm::default()
        .run(
            &cpu,
            &Tensor::zeros(vec![2, 3]),
            &Tensor::zeros(vec![3, 5]),
            Some(&Tensor::zeros(vec![3])),
        )
        .unwrap_err();
    assert!(e.to_string().contains("broadcastable to [2, 5]"), "{e}");
}

// ---------------------------------------------------------------- pooling

#[test]
fn pooling_matches_the_reference() {
    let mut rng = StdRng::seed_from_u64(4);
    let cpu = Cpu::new(2);
    let mut cases = Vec::new();
    for kind in [PoolKind::Max, PoolKind::Average] {
        let base = Pool2d::new(kind, [2, 2]);
        cases.push((
            [2, 3, 8, 8],
            Pool2d {
                strides: [2, 2],
                ..base
            },
        ));
        cases.push((
            [2, 64, 28, 28],
            Pool2d {
                kernel: [4, 4],
                strides: [4, 4],
                ..base
            },
        )); // the seed network's pool
        cases.push((
            [1, 2, 7, 9],
            Pool2d {
                kernel: [3, 3],
                strides: [2, 2],
                pads: [1, 1, 1, 1],
                ..base
            },
        ));
        cases.push((
            [1, 2, 7, 9],
            Pool2d {
                kernel: [3, 3],
                strides: [2, 2],
                pads: [1, 1, 1, 1],
                count_include_pad: true,
                ..base
            },
        ));
        cases.push((
            [1, 2, 7, 10],
            Pool2d {
                kernel: [3, 2],
                strides: [2, 3],
                ceil_mode: true,
                ..base
            },
        ));
        cases.push((
            [1, 2, 7, 10],
            Pool2d {
                kernel: [3, 2],
                strides: [2, 3],
                pads: [1, 0, 1, 1],
                ceil_mode: true,
                count_include_pad: true,
                ..base
            },
        ));
        cases.push((
            [1, 1, 9, 9],
            Pool2d {
                kernel: [3, 3],
                dilations: [2, 2],
                strides: [1, 2],
                ..base
            },
        ));
        // Windows inside the plane, rows wider than a vector with a
        // partial tail, overlapping windows, a one-column plane.
        cases.push((
            [3, 5, 9, 37],
            Pool2d {
                kernel: [3, 5],
                strides: [2, 4],
                ..base
            },
        ));
        cases.push((
            [1, 2, 6, 17],
            Pool2d {
                kernel: [3, 2],
                ..base
            },
        ));
        cases.push((
            [2, 3, 6, 1],
            Pool2d {
                kernel: [2, 1],
                ..base
            },
        ));
        cases.push(([0, 2, 5, 5], base));
    }
    for (idx, (shape, pool)) in cases.into_iter().enumerate() {
        let x = random(&shape, &mut rng);
        let (oshape, want) = pool_reference(&x, &pool);
        assert_eq!(
            pool.output_shape(&x.shape).unwrap(),
            oshape,
            "pool case {idx} {pool:?}"
        );
        let mut got = vec![f32::NAN; want.len()];
        pool.run_into(&cpu, &x, &mut got).unwrap();
        let scale = vec![1.0; want.len()];
        assert_close(
            &got,
            &want,
            &scale,
            1e-6,
            &format!("pool case {idx} {pool:?}"),
        );
    }
}

#[test]
fn global_average_pool_and_flatten() {
    let mut rng = StdRng::seed_from_u64(5);
    let x = random(&[3, 4, 5, 6], &mut rng);
    let g = global_average_pool(&x).unwrap();
    assert_eq!(g.shape, vec![3, 4, 1, 1]);
    for (i, v) in g.data.iter().enumerate() {
        let want = x.data[i * 30..(i + 1) * 30]
            .iter()
            .map(|v| *v as f64)
            .sum::<f64>()
            / 30.0;
        assert!((*v as f64 - want).abs() < 1e-6);
    }
    let f = flatten(x.clone(), 1).unwrap();
    assert_eq!(f.shape, vec![3, 120]);
    assert_eq!(f.data, x.data);
    assert_eq!(flatten(x.clone(), 0).unwrap().shape, vec![1, 360]);
    assert_eq!(flatten(x.clone(), 4).unwrap().shape, vec![360, 1]);
    assert!(flatten(x, 5).is_err());
}

// ---------------------------------------------------------------- element-wise

#[test]
fn relu_and_softmax() {
    let mut t = Tensor::new(vec![5], vec![-1.0, 0.0, 2.5, -0.0, f32::NAN]);
    relu(&mut t);
    assert_eq!(&t.data[..4], &[0.0, 0.0, 2.5, -0.0]);
    assert!(t.data[4].is_nan(), "NaN stays NaN");

    let mut rng = StdRng::seed_from_u64(6);
    let x = random(&[2, 3, 4], &mut rng);
    for axis in 0..3 {
        let mut s = x.clone();
        softmax(&mut s, axis).unwrap();
        let dims = &x.shape;
        let inner: usize = dims[axis + 1..].iter().product();
        let outer: usize = dims[..axis].iter().product();
        for o in 0..outer {
            for i in 0..inner {
                let idx = |d: usize| (o * dims[axis] + d) * inner + i;
                let z: f64 = (0..dims[axis]).map(|d| (x.data[idx(d)] as f64).exp()).sum();
                for d in 0..dims[axis] {
                    let want = (x.data[idx(d)] as f64).exp() / z;
                    assert!((s.data[idx(d)] as f64 - want).abs() < 1e-6, "axis {axis}");
                }
            }
        }
    }
    // Before opset 13: rows of the 2-D view split at the axis.
    let mut s = x.clone();
    softmax_coerced(&mut s, 1).unwrap();
    for row in 0..2 {
        let z: f64 = x.data[row * 12..(row + 1) * 12]
            .iter()
            .map(|v| (*v as f64).exp())
            .sum();
        for i in 0..12 {
            let want = (x.data[row * 12 + i] as f64).exp() / z;
            assert!((s.data[row * 12 + i] as f64 - want).abs() < 1e-6);
        }
    }
    // Large logits do not overflow.
    let mut big = Tensor::new(vec![1, 3], vec![1000.0, 1001.0, 1002.0]);
    softmax(&mut big, 1).unwrap();
    assert!(
        big.data.iter().all(|v| v.is_finite()) && (big.data.iter().sum::<f32>() - 1.0).abs() < 1e-6
    );
}

#[test]
fn a_nan_input_stays_in_its_own_output_row() {
    let cpu = Cpu::new(2);
    let mut rng = StdRng::seed_from_u64(7);
    // Conv with fused ReLU, on both the im2col (2 channels) and the Winograd
    // (8 channels) path: a NaN in image 1 poisons image 1 only.
    for channels in [2, 8] {
        let mut x = random(&[3, channels, 5, 5], &mut rng);
        x.data[channels * 25 + 12] = f32::NAN;
        let w = random(&[4, channels, 3, 3], &mut rng);
        let conv = Conv2d {
            relu: true,
            pads: [1; 4],
            ..Conv2d::default()
        };
        let y = conv.run(&cpu, &x, &w, Some(&[0.1; 4])).unwrap();
        let per_image = y.data.len() / 3;
        for (img, chunk) in y.data.chunks(per_image).enumerate() {
            assert_eq!(
                chunk.iter().any(|v| v.is_nan()),
                img == 1,
                "{channels} channels, image {img}"
            );
        }
    }
    // Gemm with fused ReLU: row 2 of A carries the NaN into row 2 of Y only.
    let mut a = random(&[4, 6], &mut rng);
    a.data[2 * 6 + 3] = f32::NAN;
    let b = random(&[6, 5], &mut rng);
    let y = Gemm {
        relu: true,
        ..Gemm::default()
    }
    .run(&cpu, &a, &b, None)
    .unwrap();
    for (row, r) in y.data.chunks(5).enumerate() {
        assert_eq!(r.iter().all(|v| v.is_nan()), row == 2, "row {row}");
        assert_eq!(r.iter().any(|v| v.is_nan()), row == 2, "row {row}");
    }
}
