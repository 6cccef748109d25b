//! Element-wise unary ops, in place, with ONNX semantics.

use super::elementwise::relu_keep_nan;
use crate::tensor::Tensor;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unary {
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
    /// `x` where `x >= 0`, else `alpha · x`.
    LeakyRelu {
        alpha: f32,
    },
    /// `max(0, min(1, alpha · x + beta))`.
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    /// `x · max(0, min(1, x / 6 + 1/2))`.
    HardSwish,
    /// `min(max(x, min), max)`: NaN stays NaN, and where `min > max` every
    /// value becomes `max`, as ONNX specifies.
    Clip {
        min: f32,
        max: f32,
    },
    /// `x · Φ(x)`: with `erf` when `!tanh`, else the tanh approximation
    /// `x/2 · (1 + tanh(√(2/π) · (x + 0.044715 x³)))`.
    Gelu {
        tanh: bool,
    },
    /// `x ^ exponent` (`powf`), the exponent fixed for the whole tensor.
    Pow {
        exponent: f32,
    },
}

/// Applies `op` to every element of `x`.
pub fn unary(op: Unary, x: &mut [f32]) {
    match op {
        Unary::Relu => map(x, relu_keep_nan),
        Unary::Sigmoid => map(x, |v| 1.0 / (1.0 + (-v).exp())),
        Unary::Tanh => map(x, f32::tanh),
        Unary::Erf => map(x, erf),
        Unary::Sqrt => map(x, f32::sqrt),
        Unary::Exp => map(x, f32::exp),
        Unary::Log => map(x, f32::ln),
        Unary::Neg => map(x, |v| -v),
        Unary::Abs => map(x, f32::abs),
        Unary::Reciprocal => map(x, |v| 1.0 / v),
        Unary::LeakyRelu { alpha } => map(x, |v| if v < 0.0 { alpha * v } else { v }),
        Unary::HardSigmoid { alpha, beta } => map(x, |v| (alpha * v + beta).clamp(0.0, 1.0)),
        Unary::HardSwish => map(x, |v| v * (v * (1.0 / 6.0) + 0.5).clamp(0.0, 1.0)),
        Unary::Clip { min, max } => map(x, |v| if v.is_nan() { v } else { v.max(min).min(max) }),
        Unary::Gelu { tanh: false } => map(x, gelu_erf),
        Unary::Gelu { tanh: true } => map(x, gelu_tanh),
        // Squares (LayerNorm's variance spelt out as Pow) vectorise.
        Unary::Pow { exponent: 2.0 } => map(x, |v| v * v),
        Unary::Pow { exponent } => map(x, |v| v.powf(exponent)),
    }
}

/// [`unary`] on a whole tensor, handing it back.
pub fn unary_tensor(op: Unary, mut x: Tensor) -> Tensor {
    unary(op, &mut x.data);
    x
}

#[inline(always)]
fn map(x: &mut [f32], f: impl Fn(f32) -> f32) {
    x.iter_mut().for_each(|v| *v = f(*v));
}

fn gelu_erf(x: f32) -> f32 {
    let x = x as f64;
    (0.5 * x * (1.0 + erf_f64(x * std::f64::consts::FRAC_1_SQRT_2))) as f32
}

/// In f64 so that `1 + tanh(..)` keeps its digits for negative `x`, where
/// it nearly cancels.
fn gelu_tanh(x: f32) -> f32 {
    let x = x as f64;
    let k = (2.0 / std::f64::consts::PI).sqrt();
    (0.5 * x * (1.0 + (k * (x + 0.044715 * x * x * x)).tanh())) as f32
}

/// The error function, within 1e-7 of the true value everywhere (the f64
/// core is within 4e-9; rounding to f32 adds at most half an ulp).
pub fn erf(x: f32) -> f32 {
    erf_f64(x as f64) as f32
}

/// `erf(x)` for `x` in f32's range, to about 4e-9 absolute: piecewise
/// polynomials, each a Chebyshev interpolant (fitted to erf in f64) written
/// out in powers of the distance from its interval's midpoint.
/// - `|x| < 1`: `x · P(x² - 1/2)`, P of degree 7 fitted to `erf(√u)/√u` on
///   u in [0, 1], so small arguments keep their relative accuracy;
/// - `1 <= |x| < 2.5`: degree 10 around 1.75;
/// - `2.5 <= |x| < 3.92`: degree 8 around 3.21;
/// - beyond, 1: `erfc(3.92) < 3e-8`, under half an f32 ulp below 1.
fn erf_f64(x: f64) -> f64 {
    const SMALL: [f64; 8] = [
        0.9654687386375695,
        -0.28107217804224327,
        0.07940999088979847,
        -0.01828388489765942,
        0.003480191850167458,
        -0.0005611812541275185,
        7.882493368072119e-05,
        -9.667043741501402e-06,
    ];
    const MID: [f64; 11] = [
        0.986671671219183,
        0.052774978837904864,
        -0.09235620577198325,
        0.09015788449527827,
        -0.04810353204489437,
        0.006618595346086322,
        0.008976282547732665,
        -0.0060370383780153575,
        0.0006756556702370247,
        0.0008625054195718927,
        -0.00034371742876973933,
    ];
    const TAIL: [f64; 9] = [
        0.9999943645779089,
        3.774614087280154e-05,
        -0.00012132745976321559,
        0.0002483528234599231,
        -0.0003559595575859714,
        0.00037345154710349566,
        -0.0003154716631378626,
        0.00022419190368758055,
        -9.023932259333377e-05,
    ];
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    let y = if a < 1.0 {
        a * horner(a * a - 0.5, &SMALL)
    } else if a < 2.5 {
        horner(a - 1.75, &MID)
    } else if a < 3.92 {
        horner(a - 3.21, &TAIL)
    } else {
        1.0
    };
    y.copysign(x)
}

/// `Σ c[k] · t^k`.
#[inline(always)]
fn horner(t: f64, c: &[f64]) -> f64 {
    c.iter().rev().fold(0.0, |acc, &ck| acc * t + ck)
}
