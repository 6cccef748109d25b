//! The ops a general ONNX graph needs beyond convolution and pooling, each
//! against a naive f64 reference written here with plain index loops, on odd
//! and empty shapes, with broadcasting. Outputs handed to the kernels are
//! poisoned (NaN) first, so an element left unwritten fails the comparison.

mod common;

use common::{assert_close, random};
use mpinfer_kernels::cpu::*;
use mpinfer_kernels::Tensor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

// ---------------------------------------------------------------- indexing

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// The multi-index of flat position `i` in `shape`.
fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for ax in (0..shape.len()).rev() {
        idx[ax] = i % shape[ax];
        i /= shape[ax];
    }
    idx
}

fn ravel(idx: &[usize], shape: &[usize]) -> usize {
    idx.iter().zip(strides(shape)).map(|(i, s)| i * s).sum()
}

/// Where output index `idx` reads an operand of `shape` broadcast to it.
fn broadcast_index(idx: &[usize], shape: &[usize]) -> usize {
    let pad = idx.len() - shape.len();
    let own: Vec<usize> = (0..shape.len())
        .map(|i| if shape[i] == 1 { 0 } else { idx[pad + i] })
        .collect();
    ravel(&own, shape)
}

fn magnitudes(v: &[f64]) -> Vec<f64> {
    v.iter().map(|x| x.abs()).collect()
}

// ---------------------------------------------------------------- broadcasting

#[test]
fn broadcast_shapes_follow_numpy() {
    let ok = |a: &[usize], b: &[usize], want: &[usize]| {
        assert_eq!(broadcast_shape(a, b).unwrap(), want, "{a:?} with {b:?}");
        assert_eq!(broadcast_shape(b, a).unwrap(), want, "{b:?} with {a:?}");
    };
    ok(&[2, 3, 4], &[3, 1], &[2, 3, 4]);
    ok(&[], &[5], &[5]);
    ok(&[], &[], &[]);
    ok(&[0, 3], &[1, 3], &[0, 3]);
    ok(&[2, 0], &[2, 1], &[2, 0]);
    ok(&[1, 3, 1, 7], &[5, 1, 4, 1], &[5, 3, 4, 7]);
    for (a, b) in [(&[2, 3][..], &[3, 2][..]), (&[0], &[2]), (&[4, 2], &[3])] {
        assert!(broadcast_shape(a, b).is_err(), "{a:?} with {b:?}");
    }
}

const BINARY: [Binary; 7] = [
    Binary::Add,
    Binary::Sub,
    Binary::Mul,
    Binary::Div,
    Binary::Pow,
    Binary::Max,
    Binary::Min,
];

fn binary_f64(op: Binary, x: f64, y: f64) -> f64 {
    match op {
        Binary::Add => x + y,
        Binary::Sub => x - y,
        Binary::Mul => x * y,
        Binary::Div => x / y,
        Binary::Pow => x.powf(y),
        Binary::Max if x.is_nan() || y.is_nan() => f64::NAN,
        Binary::Min if x.is_nan() || y.is_nan() => f64::NAN,
        Binary::Max => x.max(y),
        Binary::Min => x.min(y),
    }
}

fn binary_reference(op: Binary, a: &Tensor, b: &Tensor) -> (Vec<usize>, Vec<f64>) {
    let shape = broadcast_shape(&a.shape, &b.shape).unwrap();
    let n: usize = shape.iter().product();
    let values = (0..n)
        .map(|i| {
            let idx = unravel(i, &shape);
            let x = a.data[broadcast_index(&idx, &a.shape)] as f64;
            let y = b.data[broadcast_index(&idx, &b.shape)] as f64;
            binary_f64(op, x, y)
        })
        .collect();
    (shape, values)
}

/// Operand shapes covering each fast path (same shape, scalar either side,
/// per-channel and per-feature operands, row against column) and the
/// general walk, with extents 1, 0 and odd sizes.
fn broadcast_cases() -> Vec<(Vec<usize>, Vec<usize>)> {
    let v = |a: &[usize], b: &[usize]| (a.to_vec(), b.to_vec());
    vec![
        v(&[3, 7, 13], &[3, 7, 13]),
        v(&[], &[3, 7]),
        v(&[7, 13], &[]),
        v(&[1], &[33]),
        v(&[2, 5, 7, 3], &[5, 1, 1]),
        v(&[2, 5, 7, 3], &[2, 5, 1, 1]),
        v(&[5, 1, 1], &[2, 5, 7, 3]),
        v(&[2, 5, 1, 1], &[5, 1, 1]),
        v(&[3, 13, 33], &[33]),
        v(&[3, 13, 33], &[3, 13, 1]),
        v(&[13, 1], &[1, 7]),
        v(&[1, 3, 1, 7], &[5, 1, 4, 1]),
        v(&[3, 1, 7], &[3, 7, 7]),
        v(&[2, 3, 5, 7], &[2, 1, 5, 1]),
        v(&[0, 3], &[1, 3]),
        v(&[3, 0], &[3, 1]),
        v(&[1, 1, 1], &[1]),
    ]
}

#[test]
fn binary_ops_broadcast_like_numpy() {
    let mut rng = StdRng::seed_from_u64(11);
    for (sa, sb) in broadcast_cases() {
        let a = random(&sa, &mut rng);
        let mut b = random(&sb, &mut rng);
        b.data.iter_mut().for_each(|v| *v += v.signum() * 0.25); // keep Div tame
        for op in BINARY {
            let (shape, want) = binary_reference(op, &a, &b);
            let what = format!("{op:?} {sa:?} with {sb:?}");
            let got = binary(op, &a, &b).unwrap();
            assert_eq!(got.shape, shape, "{what}");
            assert_close(&got.data, &want, &magnitudes(&want), 1e-5, &what);

            let mut out = vec![f32::NAN; want.len()];
            binary_into(op, &a, &b, &mut out).unwrap();
            assert_close(&out, &want, &magnitudes(&want), 1e-5, &what);

            if shape == a.shape {
                let mut inplace = a.clone();
                binary_in_place(op, &mut inplace, &b).unwrap();
                assert_close(&inplace.data, &want, &magnitudes(&want), 1e-5, &what);
            } else {
                assert!(binary_in_place(op, &mut a.clone(), &b).is_err(), "{what}");
            }
        }
    }
}

#[test]
fn binary_refuses_bad_shapes_and_keeps_nan() {
    let a = Tensor::zeros(vec![2, 3]);
    let b = Tensor::zeros(vec![3, 2]);
    assert!(binary(Binary::Add, &a, &b).is_err());
    let mut short = vec![0.0; 5];
    assert!(binary_into(Binary::Add, &a, &a, &mut short).is_err());
    let broken = Tensor {
        shape: vec![4],
        data: vec![0.0; 3],
    };
    assert!(binary(Binary::Add, &broken, &broken).is_err());

    let x = Tensor::new(vec![3], vec![f32::NAN, 1.0, 2.0]);
    let y = Tensor::new(vec![3], vec![0.0, f32::NAN, 1.0]);
    for op in [Binary::Max, Binary::Min] {
        let got = binary(op, &x, &y).unwrap().data;
        assert!(got[0].is_nan() && got[1].is_nan(), "{op:?}: {got:?}");
        assert_eq!(got[2], if op == Binary::Max { 2.0 } else { 1.0 });
    }
}

// ---------------------------------------------------------------- unary

/// erf in f64 from its everywhere-convergent series with positive terms,
/// `erf x = 2/√π · e^(-x²) · Σ 2ⁿ x^(2n+1) / (1·3·…·(2n+1))`, so no
/// cancellation; beyond 6 erf is 1 to f64 precision.
fn erf_reference(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    if a > 6.0 {
        return 1f64.copysign(x);
    }
    let (mut term, mut sum, mut n) = (a, a, 0u32);
    while term > 1e-18 * sum {
        n += 1;
        term *= 2.0 * a * a / (2 * n + 1) as f64;
        sum += term;
    }
    (2.0 / std::f64::consts::PI.sqrt() * (-a * a).exp() * sum).copysign(x)
}

#[test]
fn erf_reference_matches_known_values() {
    // erf(1/2), erf(1), erf(2), erf(3) to 16 digits.
    let known = [
        (0.5, 0.520_499_877_813_046_5),
        (1.0, 0.842_700_792_949_714_9),
        (2.0, 0.995_322_265_018_952_7),
        (3.0, 0.999_977_909_503_001_4),
    ];
    for (x, want) in known {
        assert!((erf_reference(x) - want).abs() < 1e-15, "erf({x})");
        assert!((erf_reference(-x) + want).abs() < 1e-15, "erf(-{x})");
    }
}

#[test]
fn erf_is_within_2e7_everywhere() {
    let check = |x: f32| {
        let got = erf(x);
        let want = erf_reference(x as f64);
        assert!(
            (got as f64 - want).abs() <= 2e-7,
            "erf({x:e}) = {got:e}, want {want:e}"
        );
        assert_eq!(erf(-x).to_bits(), (-got).to_bits(), "erf is odd at {x:e}");
    };
    // Every 193rd float from 0 up to 4.5, past where erf rounds to 1.
    for bits in (0..4.5f32.to_bits()).step_by(193) {
        check(f32::from_bits(bits));
    }
    // Around the seams between the pieces, float by float.
    for seam in [1.0f32, 2.5, 3.92] {
        for d in -2000i32..2000 {
            check(f32::from_bits((seam.to_bits() as i32 + d) as u32));
        }
    }
    for x in [0.0, 1e-30, 1e-8, 5.0, 10.0, 1e30, f32::MAX, f32::INFINITY] {
        check(x);
    }
    assert!(erf(f32::NAN).is_nan());
    assert_eq!(erf(-0.0).to_bits(), (-0.0f32).to_bits());
    // Small arguments keep their relative accuracy: erf(x) ≈ 2x/√π.
    let tiny = 1e-20f32;
    let rel = (erf(tiny) as f64 / erf_reference(tiny as f64) - 1.0).abs();
    assert!(rel < 1e-6, "erf(1e-20) relative error {rel:e}");
}

const UNARY: [Unary; 19] = [
    Unary::Relu,
    Unary::Sigmoid,
    Unary::Tanh,
    Unary::Erf,
    Unary::Sqrt,
    Unary::Exp,
    Unary::Log,
    Unary::Neg,
    Unary::Abs,
    Unary::Reciprocal,
    Unary::LeakyRelu { alpha: 0.1 },
    Unary::HardSigmoid {
        alpha: 0.2,
        beta: 0.5,
    },
    Unary::HardSwish,
    Unary::Clip {
        min: -1.5,
        max: 2.0,
    },
    Unary::Clip {
        min: 1.0,
        max: -1.0,
    },
    Unary::Gelu { tanh: false },
    Unary::Gelu { tanh: true },
    Unary::Pow { exponent: 2.0 },
    Unary::Pow { exponent: 3.5 },
];

fn unary_f64(op: Unary, x: f64) -> f64 {
    let clamp01 = |v: f64| if v.is_nan() { v } else { v.clamp(0.0, 1.0) };
    match op {
        Unary::Relu => {
            if x < 0.0 {
                0.0
            } else {
                x
            }
        }
        Unary::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        Unary::Tanh => x.tanh(),
        Unary::Erf => erf_reference(x),
        Unary::Sqrt => x.sqrt(),
        Unary::Exp => x.exp(),
        Unary::Log => x.ln(),
        Unary::Neg => -x,
        Unary::Abs => x.abs(),
        Unary::Reciprocal => 1.0 / x,
        Unary::LeakyRelu { alpha } => {
            if x < 0.0 {
                alpha as f64 * x
            } else {
                x
            }
        }
        Unary::HardSigmoid { alpha, beta } => clamp01(alpha as f64 * x + beta as f64),
        Unary::HardSwish => x * clamp01(x / 6.0 + 0.5),
        Unary::Clip { min, max } => {
            if x.is_nan() {
                x
            } else if (min as f64) > max as f64 {
                max as f64
            } else {
                x.clamp(min as f64, max as f64)
            }
        }
        Unary::Gelu { tanh: false } => 0.5 * x * (1.0 + erf_reference(x / 2f64.sqrt())),
        Unary::Gelu { tanh: true } => {
            let k = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * x * (1.0 + (k * (x + 0.044715 * x * x * x)).tanh())
        }
        Unary::Pow { exponent } => x.powf(exponent as f64),
    }
}

#[test]
fn unary_ops_match_their_definitions() {
    let mut rng = StdRng::seed_from_u64(12);
    let mut x: Vec<f32> = (0..1013).map(|_| rng.gen_range(-6.0f32..6.0)).collect();
    x.extend([
        0.0,
        -0.0,
        1e-30,
        -1e-30,
        30.0,
        -30.0,
        100.0,
        -100.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
    ]);
    for op in UNARY {
        let want: Vec<f64> = x.iter().map(|&v| unary_f64(op, v as f64)).collect();
        let mut got = x.clone();
        unary(op, &mut got);
        // f32 overflows (exp(100)) and underflows where f64 does not.
        let want: Vec<f64> = want.iter().map(|&w| w as f32 as f64).collect();
        assert_close(&got, &want, &magnitudes(&want), 1e-5, &format!("{op:?}"));
        let t = unary_tensor(op, Tensor::new(vec![x.len()], x.clone()));
        assert_close(&t.data, &want, &magnitudes(&want), 1e-5, &format!("{op:?}"));
    }
    // The NaN rules: ReLU and Clip pass NaN through.
    for op in [Unary::Relu, Unary::Clip { min: 0.0, max: 1.0 }] {
        let mut v = [f32::NAN];
        unary(op, &mut v);
        assert!(v[0].is_nan(), "{op:?}");
    }
}

// ---------------------------------------------------------------- normalisation

fn layer_norm_reference(
    x: &Tensor,
    axis: usize,
    scale: Option<&[f32]>,
    bias: Option<&[f32]>,
    eps: f64,
) -> Vec<f64> {
    let block: usize = x.shape[axis..].iter().product();
    let mut out = vec![0.0; x.data.len()];
    for (row, dst) in x.data.chunks(block).zip(out.chunks_mut(block)) {
        let mean = row.iter().map(|v| *v as f64).sum::<f64>() / block as f64;
        let var = row
            .iter()
            .map(|v| (*v as f64 - mean) * (*v as f64 - mean))
            .sum::<f64>()
            / block as f64;
        for (i, (d, v)) in dst.iter_mut().zip(row).enumerate() {
            let s = scale.map_or(1.0, |s| s[i] as f64);
            let b = bias.map_or(0.0, |b| b[i] as f64);
            *d = (*v as f64 - mean) / (var + eps).sqrt() * s + b;
        }
    }
    out
}

#[test]
fn layer_norm_normalises_trailing_axes() {
    let mut rng = StdRng::seed_from_u64(13);
    for (shape, axis) in [
        (vec![3, 7, 13], 2),
        (vec![3, 7, 13], 1),
        (vec![3, 7, 13], 0),
        (vec![1, 33], 1),
        (vec![13, 1], 1),
        (vec![5, 3], 1),
    ] {
        let mut x = random(&shape, &mut rng);
        // A large common offset: a one-pass variance would cancel away.
        x.data.iter_mut().for_each(|v| *v += 1000.0);
        let block: usize = shape[axis..].iter().product();
        let scale = random(&[block], &mut rng).data;
        let bias = random(&[block], &mut rng).data;
        for (s, b) in [
            (None, None),
            (Some(&scale[..]), Some(&bias[..])),
            (Some(&scale[..]), None),
        ] {
            let got = layer_norm(&x, axis, s, b, 1e-5).unwrap();
            assert_eq!(got.shape, shape);
            let want = layer_norm_reference(&x, axis, s, b, 1e-5);
            // Relative to the output's own scale: the normalised values are O(1).
            let what = format!("{shape:?} axis {axis}");
            assert_close(&got.data, &want, &vec![4.0; want.len()], 1e-4, &what);
        }
    }
    let x = Tensor::zeros(vec![2, 4]);
    assert!(layer_norm(&x, 2, None, None, 1e-5).is_err());
    assert!(layer_norm(&x, 1, Some(&[1.0; 3]), None, 1e-5).is_err());
    assert!(layer_norm(&x, 1, None, Some(&[1.0; 8]), 1e-5).is_err());
    let empty = layer_norm(&Tensor::zeros(vec![3, 0]), 1, Some(&[]), None, 1e-5).unwrap();
    assert_eq!(empty.shape, vec![3, 0]);
}

#[test]
fn channel_affine_scales_and_shifts_each_channel() {
    let mut rng = StdRng::seed_from_u64(14);
    for shape in [
        vec![2, 5, 3, 7],
        vec![3, 4],
        vec![1, 13, 1, 1],
        vec![2, 3, 0],
    ] {
        let x = random(&shape, &mut rng);
        let c = shape[1];
        let scale = random(&[c], &mut rng).data;
        let shift = random(&[c], &mut rng).data;
        let want: Vec<f64> = (0..x.data.len())
            .map(|i| {
                let ch = unravel(i, &shape)[1];
                x.data[i] as f64 * scale[ch] as f64 + shift[ch] as f64
            })
            .collect();
        let mut got = x.clone();
        channel_affine(&mut got, &scale, &shift).unwrap();
        assert_close(
            &got.data,
            &want,
            &vec![2.0; want.len()],
            1e-6,
            &format!("{shape:?}"),
        );
    }
    let mut x = Tensor::zeros(vec![2, 3]);
    assert!(channel_affine(&mut x, &[1.0; 2], &[0.0; 3]).is_err());
    assert!(channel_affine(&mut Tensor::zeros(vec![3]), &[1.0; 3], &[0.0; 3]).is_err());
}

// ---------------------------------------------------------------- reductions

const REDUCE: [Reduce; 7] = [
    Reduce::Mean,
    Reduce::Sum,
    Reduce::Max,
    Reduce::Min,
    Reduce::Prod,
    Reduce::L2,
    Reduce::SumSquare,
];

/// Output values and, per output, the sum of the magnitudes of its terms.
fn reduce_reference(op: Reduce, x: &Tensor, axes: &[usize]) -> (Vec<usize>, Vec<f64>, Vec<f64>) {
    let all: Vec<usize> = (0..x.shape.len()).collect();
    let axes = if axes.is_empty() { &all[..] } else { axes };
    let kept: Vec<usize> = (0..x.shape.len())
        .map(|i| if axes.contains(&i) { 1 } else { x.shape[i] })
        .collect();
    let n: usize = kept.iter().product();
    let init = match op {
        Reduce::Max => f64::NEG_INFINITY,
        Reduce::Min => f64::INFINITY,
        Reduce::Prod => 1.0,
        _ => 0.0,
    };
    let (mut acc, mut mag, mut count) = (vec![init; n], vec![0.0; n], vec![0usize; n]);
    for (i, &v) in x.data.iter().enumerate() {
        let o = broadcast_index(&unravel(i, &x.shape), &kept);
        let v = v as f64;
        acc[o] = match op {
            Reduce::Mean | Reduce::Sum => acc[o] + v,
            Reduce::Max => acc[o].max(v),
            Reduce::Min => acc[o].min(v),
            Reduce::Prod => acc[o] * v,
            Reduce::L2 | Reduce::SumSquare => acc[o] + v * v,
        };
        mag[o] += if matches!(op, Reduce::L2 | Reduce::SumSquare) {
            v * v
        } else {
            v.abs()
        };
        count[o] += 1;
    }
    for o in 0..n {
        match op {
            Reduce::Mean => {
                acc[o] /= count[o] as f64;
                mag[o] /= count[o] as f64;
            }
            Reduce::L2 => {
                acc[o] = acc[o].sqrt();
                mag[o] = mag[o].sqrt();
            }
            Reduce::Prod => mag[o] = acc[o].abs(),
            _ => {}
        }
    }
    (kept, acc, mag)
}

#[test]
fn reductions_over_any_axes() {
    let mut rng = StdRng::seed_from_u64(15);
    let shapes_axes: Vec<(Vec<usize>, Vec<Vec<usize>>)> = vec![
        (
            vec![3, 5, 7, 4],
            vec![
                vec![],
                vec![0],
                vec![3],
                vec![2, 3],
                vec![1, 3],
                vec![0, 2],
                vec![0, 1],
                vec![1, 2],
                vec![0, 1, 2, 3],
            ],
        ),
        (vec![2, 13, 33], vec![vec![2], vec![1], vec![0, 2]]),
        (vec![1, 7, 1], vec![vec![0], vec![1], vec![2], vec![0, 2]]),
        (vec![33], vec![vec![0], vec![]]),
        (vec![], vec![vec![]]),
    ];
    for (shape, axes_list) in shapes_axes {
        let mut x = random(&shape, &mut rng);
        // Factors near 1 keep products of 1000 values in range.
        x.data.iter_mut().for_each(|v| *v = 1.0 + 0.01 * *v);
        x.data.iter_mut().step_by(3).for_each(|v| *v -= 2.0);
        for axes in &axes_list {
            for op in REDUCE {
                let (kept, want, mag) = reduce_reference(op, &x, axes);
                let what = format!("{op:?} {shape:?} over {axes:?}");
                let got = reduce(op, &x, axes, true).unwrap();
                assert_eq!(got.shape, kept, "{what}");
                assert_close(&got.data, &want, &mag, 1e-5, &what);
                let dropped = reduce(op, &x, axes, false).unwrap();
                let all = axes.is_empty();
                let want_shape: Vec<usize> = (0..shape.len())
                    .filter(|i| !all && !axes.contains(i))
                    .map(|i| shape[i])
                    .collect();
                assert_eq!(dropped.shape, want_shape, "{what}");
                assert_eq!(dropped.data, got.data, "{what}");
            }
        }
    }
}

#[test]
fn reductions_over_nothing_and_nan() {
    let x = Tensor::zeros(vec![3, 0, 4]);
    let got = |op| reduce(op, &x, &[1], false).unwrap();
    assert_eq!(got(Reduce::Sum).data, vec![0.0; 12]);
    assert_eq!(got(Reduce::Max).data, vec![f32::NEG_INFINITY; 12]);
    assert_eq!(got(Reduce::Prod).data, vec![1.0; 12]);
    assert!(got(Reduce::Mean).data.iter().all(|v| v.is_nan()));
    assert_eq!(got(Reduce::Sum).shape, vec![3, 4]);
    // Over the other axes there is nothing to produce.
    assert_eq!(
        reduce(Reduce::Sum, &x, &[0, 2], true).unwrap().shape,
        vec![1, 0, 1]
    );

    let x = Tensor::new(vec![2, 3], vec![1.0, f32::NAN, 3.0, 4.0, 5.0, 6.0]);
    for op in [Reduce::Max, Reduce::Min] {
        for axes in [&[1][..], &[0]] {
            let r = reduce(op, &x, axes, false).unwrap();
            assert!(r.data.iter().any(|v| v.is_nan()), "{op:?} over {axes:?}");
        }
    }
    assert!(reduce(Reduce::Sum, &x, &[2], false).is_err());
    assert!(reduce(Reduce::Sum, &x, &[1, 1], false).is_err());
}

// ---------------------------------------------------------------- layout

fn transpose_reference(x: &Tensor, perm: &[usize]) -> Tensor {
    let shape: Vec<usize> = perm.iter().map(|&p| x.shape[p]).collect();
    let data = (0..x.data.len())
        .map(|i| {
            let idx = unravel(i, &shape);
            let mut src = vec![0; perm.len()];
            for (o, &p) in perm.iter().enumerate() {
                src[p] = idx[o];
            }
            x.data[ravel(&src, &x.shape)]
        })
        .collect();
    Tensor { shape, data }
}

fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for p in permutations(n - 1) {
        for at in 0..n {
            let mut q = p.clone();
            q.insert(at, n - 1);
            out.push(q);
        }
    }
    out
}

#[test]
fn transpose_matches_index_permutation() {
    let mut rng = StdRng::seed_from_u64(16);
    for shape in [
        vec![3, 5, 7],
        vec![2, 3, 5, 7],
        vec![1, 7, 1, 13],
        vec![33, 40],
        vec![3, 37, 19],
        vec![2, 0, 3],
        vec![7],
        vec![],
    ] {
        let x = random(&shape, &mut rng);
        for perm in permutations(shape.len()) {
            let got = transpose(&x, &perm).unwrap();
            let want = transpose_reference(&x, &perm);
            assert_eq!(got, want, "{shape:?} by {perm:?}");
        }
    }
    let x = Tensor::zeros(vec![2, 3]);
    for bad in [&[0][..], &[0, 0], &[0, 2], &[1, 0, 2]] {
        assert!(transpose(&x, bad).is_err(), "{bad:?}");
    }
}

fn slice_reference(x: &Tensor, starts: &[i64], ends: &[i64], steps: &[i64]) -> Tensor {
    let taken: Vec<Vec<usize>> = (0..x.shape.len())
        .map(|ax| {
            let mut v = Vec::new();
            let mut i = starts[ax];
            while (steps[ax] > 0 && i < ends[ax]) || (steps[ax] < 0 && i > ends[ax]) {
                v.push(i as usize);
                i += steps[ax];
            }
            v
        })
        .collect();
    let shape: Vec<usize> = taken.iter().map(|t| t.len()).collect();
    let n = shape.iter().product();
    let data = (0..n)
        .map(|i| {
            let idx = unravel(i, &shape);
            let src: Vec<usize> = idx
                .iter()
                .enumerate()
                .map(|(ax, &j)| taken[ax][j])
                .collect();
            x.data[ravel(&src, &x.shape)]
        })
        .collect();
    Tensor { shape, data }
}

#[test]
fn slice_takes_steps_both_ways() {
    let mut rng = StdRng::seed_from_u64(17);
    let shape = [7usize, 13, 5];
    let x = random(&shape, &mut rng);
    for _ in 0..400 {
        let (mut starts, mut ends, mut steps) = (vec![], vec![], vec![]);
        for &d in &shape {
            let d = d as i64;
            let step = [1, 2, 3, -1, -2, -5, 7][rng.gen_range(0..7)];
            let (s, e) = if step > 0 {
                let s = rng.gen_range(0..=d);
                (s, rng.gen_range(0..=d))
            } else {
                // `end` -1: through index 0.
                (rng.gen_range(0..d), rng.gen_range(-1..d))
            };
            starts.push(s);
            ends.push(e);
            steps.push(step);
        }
        let got = slice(&x, &starts, &ends, &steps).unwrap();
        let want = slice_reference(&x, &starts, &ends, &steps);
        assert_eq!(got, want, "starts {starts:?} ends {ends:?} steps {steps:?}");
    }
    // Whole axis reversed, and one index with a step far larger than the axis.
    let got = slice(&x, &[6, 0, 4], &[-1, 13, -1], &[-1, 1, -1]).unwrap();
    assert_eq!(
        got,
        slice_reference(&x, &[6, 0, 4], &[-1, 13, -1], &[-1, 1, -1])
    );
    let got = slice(&x, &[2, 0, 0], &[3, 13, 5], &[i64::MAX, 1, 1]).unwrap();
    assert_eq!(got.shape, vec![1, 13, 5]);
    assert_eq!(got.data, x.data[2 * 65..3 * 65]);
    let empty = slice(&x, &[3, 0, 0], &[3, 13, 5], &[1, 1, 1]).unwrap();
    assert_eq!((empty.shape, empty.data.len()), (vec![0, 13, 5], 0));

    assert!(slice(&x, &[0, 0, 0], &[7, 13, 5], &[1, 0, 1]).is_err());
    assert!(slice(&x, &[0, 0, 0], &[8, 13, 5], &[1, 1, 1]).is_err());
    assert!(slice(&x, &[7, 0, 0], &[0, 13, 5], &[-1, 1, 1]).is_err());
    assert!(slice(&x, &[0, 0], &[7, 13], &[1, 1]).is_err());
}

#[test]
fn concat_and_split_are_inverse() {
    let mut rng = StdRng::seed_from_u64(18);
    let base = [3usize, 4, 5];
    for axis in 0..3 {
        let parts: Vec<Tensor> = [2, 0, 7, 1]
            .iter()
            .map(|&n| {
                let mut s = base.to_vec();
                s[axis] = n;
                random(&s, &mut rng)
            })
            .collect();
        let refs: Vec<&Tensor> = parts.iter().collect();
        let joined = concat(&refs, axis).unwrap();
        let mut shape = base.to_vec();
        shape[axis] = 10;
        assert_eq!(joined.shape, shape);
        // Reference: each output element found in the part that covers it.
        for (i, &v) in joined.data.iter().enumerate() {
            let mut idx = unravel(i, &shape);
            let mut part = 0;
            while idx[axis] >= parts[part].shape[axis] {
                idx[axis] -= parts[part].shape[axis];
                part += 1;
            }
            assert_eq!(
                v,
                parts[part].data[ravel(&idx, &parts[part].shape)],
                "axis {axis}"
            );
        }
        let back = split(&joined, axis, &[2, 0, 7, 1]).unwrap();
        assert_eq!(back, parts, "axis {axis}");
    }
    let a = Tensor::zeros(vec![2, 3]);
    let b = Tensor::zeros(vec![3, 3]);
    assert!(concat(&[&a, &b], 1).is_err());
    assert!(concat(&[&a, &b], 2).is_err());
    assert!(concat(&[], 0).is_err());
    assert_eq!(concat(&[&a, &b], 0).unwrap().shape, vec![5, 3]);
    assert!(split(&a, 1, &[1, 1]).is_err());
    assert!(split(&a, 2, &[3]).is_err());
}

#[test]
fn gather_takes_slices_along_an_axis() {
    let mut rng = StdRng::seed_from_u64(19);
    let x = random(&[5, 7, 3], &mut rng);
    let cases: Vec<(usize, Vec<usize>, Vec<usize>)> = vec![
        (1, vec![6, 0, 3, 3, 1, 5], vec![2, 3]),
        (1, vec![4], vec![]),
        (0, vec![4, 0, 2], vec![3]),
        (2, vec![2, 2, 0, 1], vec![4, 1]),
        (0, vec![], vec![0]),
    ];
    for (axis, indices, ishape) in cases {
        let got = gather(&x, axis, &indices, &ishape).unwrap();
        let shape = [&x.shape[..axis], &ishape[..], &x.shape[axis + 1..]].concat();
        assert_eq!(got.shape, shape);
        for (i, &v) in got.data.iter().enumerate() {
            let idx = unravel(i, &shape);
            let k = ishape.len();
            let which = ravel(&idx[axis..axis + k], &ishape);
            let mut src = idx[..axis].to_vec();
            src.push(indices[which]);
            src.extend(&idx[axis + k..]);
            assert_eq!(v, x.data[ravel(&src, &x.shape)], "axis {axis} {ishape:?}");
        }
    }
    assert!(gather(&x, 1, &[7], &[1]).is_err());
    assert!(gather(&x, 3, &[0], &[1]).is_err());
    assert!(gather(&x, 0, &[0, 1], &[3]).is_err());
}

#[test]
fn expand_broadcasts_to_a_shape() {
    let mut rng = StdRng::seed_from_u64(20);
    for (from, to) in [
        (vec![3, 1], vec![2, 3, 7]),
        (vec![], vec![3, 4]),
        (vec![1, 5], vec![4, 1]),
        (vec![2, 1, 3], vec![1]),
        (vec![5, 1, 1], vec![2, 5, 3, 7]),
        (vec![1, 3], vec![0, 3]),
    ] {
        let x = random(&from, &mut rng);
        let got = expand(&x, &to).unwrap();
        let shape = broadcast_shape(&from, &to).unwrap();
        assert_eq!(got.shape, shape);
        let want: Vec<f32> = (0..got.data.len())
            .map(|i| x.data[broadcast_index(&unravel(i, &shape), &from)])
            .collect();
        assert_eq!(got.data, want, "{from:?} to {to:?}");
    }
    assert!(expand(&Tensor::zeros(vec![3]), &[4]).is_err());
}

// ---------------------------------------------------------------- matmul and softmax

/// numpy matmul in f64 with 1-D promotion: values and per-element sums of
/// the magnitudes of the products.
fn matmul_reference(a: &Tensor, b: &Tensor) -> (Vec<usize>, Vec<f64>, Vec<f64>) {
    let a_shape = if a.shape.len() == 1 {
        vec![1, a.shape[0]]
    } else {
        a.shape.clone()
    };
    let b_shape = if b.shape.len() == 1 {
        vec![b.shape[0], 1]
    } else {
        b.shape.clone()
    };
    let (ra, rb) = (a_shape.len(), b_shape.len());
    let (m, k, n) = (a_shape[ra - 2], a_shape[ra - 1], b_shape[rb - 1]);
    let batch = broadcast_shape(&a_shape[..ra - 2], &b_shape[..rb - 2]).unwrap();
    let count: usize = batch.iter().product();
    let (mut out, mut mag) = (vec![], vec![]);
    for e in 0..count {
        let idx = unravel(e, &batch);
        let ea = broadcast_index(&idx, &a_shape[..ra - 2]);
        let eb = broadcast_index(&idx, &b_shape[..rb - 2]);
        for r in 0..m {
            for c in 0..n {
                let (mut acc, mut s) = (0.0, 0.0);
                for j in 0..k {
                    let p =
                        a.data[(ea * m + r) * k + j] as f64 * b.data[(eb * k + j) * n + c] as f64;
                    acc += p;
                    s += p.abs();
                }
                out.push(acc);
                mag.push(s);
            }
        }
    }
    let mut shape = batch;
    if a.shape.len() > 1 {
        shape.push(m);
    }
    if b.shape.len() > 1 {
        shape.push(n);
    }
    (shape, out, mag)
}

#[test]
fn batched_matmul_follows_numpy() {
    let mut rng = StdRng::seed_from_u64(21);
    let cases: Vec<(Vec<usize>, Vec<usize>)> = vec![
        (vec![3, 7], vec![7, 5]),
        (vec![2, 3, 7], vec![7, 5]),
        (vec![2, 33, 13], vec![1, 13, 7]),
        (vec![3, 7], vec![2, 7, 5]),
        (vec![7], vec![2, 7, 5]),
        (vec![2, 3, 7], vec![7]),
        (vec![7], vec![7]),
        (vec![2, 1, 3, 7], vec![1, 4, 7, 5]),
        (vec![4, 70, 13], vec![4, 13, 33]),
        (vec![1, 130, 3], vec![3, 1]),
        (vec![3, 0], vec![0, 5]),
        (vec![0, 3, 4], vec![4, 2]),
        (vec![2, 3, 4], vec![2, 4, 0]),
    ];
    for threads in [1, 3] {
        let cpu = Cpu::new(threads);
        for (sa, sb) in &cases {
            let a = random(sa, &mut rng);
            let b = random(sb, &mut rng);
            let (shape, want, mag) = matmul_reference(&a, &b);
            let got = batched_matmul(&cpu, &a, &b).unwrap();
            let what = format!("{sa:?} x {sb:?} on {threads} threads");
            assert_eq!(got.shape, shape, "{what}");
            assert_close(&got.data, &want, &mag, 1e-5, &what);
        }
    }
    let cpu = Cpu::new(1);
    let bad = |a: &[usize], b: &[usize]| {
        batched_matmul(&cpu, &Tensor::zeros(a.to_vec()), &Tensor::zeros(b.to_vec())).is_err()
    };
    assert!(bad(&[3, 4], &[5, 2]));
    assert!(bad(&[2, 3, 4], &[3, 4, 2]));
    assert!(bad(&[], &[3]));
    assert!(bad(&[4], &[]));
}

#[test]
fn softmax_along_every_axis() {
    let mut rng = StdRng::seed_from_u64(22);
    let shape = [3usize, 7, 13];
    let mut x = random(&shape, &mut rng);
    x.data.iter_mut().for_each(|v| *v *= 20.0);
    for axis in 0..3 {
        let mut got = x.clone();
        softmax(&mut got, axis).unwrap();
        let mut want = vec![0.0; x.data.len()];
        for (i, w) in want.iter_mut().enumerate() {
            let idx = unravel(i, &shape);
            let along = |d: usize| {
                let mut j = idx.clone();
                j[axis] = d;
                x.data[ravel(&j, &shape)] as f64
            };
            let max = (0..shape[axis])
                .map(along)
                .fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = (0..shape[axis]).map(|d| (along(d) - max).exp()).sum();
            *w = (x.data[i] as f64 - max).exp() / z;
        }
        assert_close(
            &got.data,
            &want,
            &vec![1.0; want.len()],
            1e-5,
            &format!("axis {axis}"),
        );
    }
}
