//! Reductions over 16-bit floats, widened to f32 for each step and rounded
//! once. Widening one value at a time through `half` costs about 100× an f32
//! add, so bf16 uses shift-and-round bit arithmetic the compiler vectorises,
//! and f16 uses the F16C conversion instructions where the CPU has them.

use crate::op::ReduceOp;
use half::{bf16, f16};

/// Expands `$body` once per reduction op with `$f` bound to that op on f32,
/// so each loop is compiled (and vectorised) for one op.
macro_rules! for_op {
    ($op:expr, $f:ident => $body:expr) => {
        match $op {
            ReduceOp::Sum | ReduceOp::Avg => {
                let $f = |a: f32, b: f32| a + b;
                $body
            }
            ReduceOp::Prod => {
                let $f = |a: f32, b: f32| a * b;
                $body
            }
            ReduceOp::Min => {
                let $f = f32::min;
                $body
            }
            ReduceOp::Max => {
                let $f = f32::max;
                $body
            }
        }
    };
}

/// Exact for every bf16, NaN included: the low half of the f32 is zero.
#[inline(always)]
fn bf16_widen(h: bf16) -> f32 {
    f32::from_bits((h.to_bits() as u32) << 16)
}

/// Round to nearest, ties to even, bit-identical to `bf16::from_f32` for
/// every value a step can produce: non-NaN results, and NaNs, which
/// arithmetic on widened bf16 only ever yields with a zero low half (x86
/// propagates an operand's payload or the default NaN). Leaving out the NaN
/// test is what lets this loop vectorise: with it, it runs 3× slower.
#[inline(always)]
fn bf16_narrow(v: f32) -> bf16 {
    let x = v.to_bits();
    bf16::from_bits(((x + 0x7FFF + ((x >> 16) & 1)) >> 16) as u16)
}

pub fn bf16_combine(op: ReduceOp, acc: &mut [bf16], src: &[bf16]) {
    assert_eq!(acc.len(), src.len());
    for_op!(op, f => {
        for (a, b) in acc.iter_mut().zip(src) {
            *a = bf16_narrow(f(bf16_widen(*a), bf16_widen(*b)));
        }
    })
}

pub fn bf16_divide(buf: &mut [bf16], by: usize) {
    let by = by as f32;
    for v in buf.iter_mut() {
        *v = bf16_narrow(bf16_widen(*v) / by);
    }
}

pub fn f16_combine(op: ReduceOp, acc: &mut [f16], src: &[f16]) {
    assert_eq!(acc.len(), src.len());
    if !f16c::combine(op, acc, src) {
        portable::f16_combine(op, acc, src);
    }
}

pub fn f16_divide(buf: &mut [f16], by: usize) {
    use half::slice::HalfFloatSliceExt;
    let mut wide = [0f32; 1024];
    for chunk in buf.chunks_mut(1024) {
        let n = chunk.len();
        chunk.convert_to_f32_slice(&mut wide[..n]);
        wide[..n].iter_mut().for_each(|v| *v /= by as f32);
        chunk.convert_from_f32_slice(&wide[..n]);
    }
}

mod portable {
    use super::*;
    use half::slice::HalfFloatSliceExt;

    /// Through `half`'s slice conversions, a block at a time.
    pub fn f16_combine(op: ReduceOp, acc: &mut [f16], src: &[f16]) {
        const BLOCK: usize = 1024;
        let mut x = [0f32; BLOCK];
        let mut y = [0f32; BLOCK];
        for (a, b) in acc.chunks_mut(BLOCK).zip(src.chunks(BLOCK)) {
            let n = a.len();
            a.convert_to_f32_slice(&mut x[..n]);
            b.convert_to_f32_slice(&mut y[..n]);
            for_op!(op, f => x[..n].iter_mut().zip(&y[..n]).for_each(|(p, q)| *p = f(*p, *q)));
            a.convert_from_f32_slice(&x[..n]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod f16c {
    use super::*;
    use std::arch::x86_64::*;

    /// Runs the F16C kernel if the CPU has it and the op maps onto an AVX
    /// instruction with `f32`'s semantics (min/max differ on NaN, so they
    /// take the portable path). Returns whether it ran.
    pub fn combine(op: ReduceOp, acc: &mut [f16], src: &[f16]) -> bool {
        if !(std::is_x86_feature_detected!("f16c") && std::is_x86_feature_detected!("avx")) {
            return false;
        }
        // SAFETY: the kernels need AVX and F16C, which the CPU was just
        // found to have.
        unsafe {
            match op {
                ReduceOp::Sum | ReduceOp::Avg => kernel::<false>(acc, src),
                ReduceOp::Prod => kernel::<true>(acc, src),
                ReduceOp::Min | ReduceOp::Max => return false,
            }
        }
        true
    }

    /// `acc[i] = acc[i] op src[i]` (a product if `MUL`, else a sum), eight
    /// lanes at a time in f32, each rounded once to f16.
    #[target_feature(enable = "avx,f16c")]
    fn kernel<const MUL: bool>(acc: &mut [f16], src: &[f16]) {
        let mut acc8 = acc.chunks_exact_mut(8);
        let mut src8 = src.chunks_exact(8);
        for (a, b) in (&mut acc8).zip(&mut src8) {
            // SAFETY: each chunk is 8 f16, the 16 bytes an unaligned 128-bit
            // load or store touches.
            unsafe {
                let x = _mm256_cvtph_ps(_mm_loadu_si128(a.as_ptr().cast()));
                let y = _mm256_cvtph_ps(_mm_loadu_si128(b.as_ptr().cast()));
                let r = if MUL {
                    _mm256_mul_ps(x, y)
                } else {
                    _mm256_add_ps(x, y)
                };
                _mm_storeu_si128(
                    a.as_mut_ptr().cast(),
                    _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(r),
                );
            }
        }
        for (a, b) in acc8.into_remainder().iter_mut().zip(src8.remainder()) {
            let (x, y) = (a.to_f32(), b.to_f32());
            *a = f16::from_f32(if MUL { x * y } else { x + y });
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod f16c {
    use super::*;
    pub fn combine(_: ReduceOp, _: &mut [f16], _: &[f16]) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_bit_tricks_match_half_on_every_pattern() {
        for bits in 0..=u16::MAX {
            let h = bf16::from_bits(bits);
            if !h.is_nan() {
                assert_eq!(
                    bf16_widen(h).to_bits(),
                    h.to_f32().to_bits(),
                    "widen {bits:#06x}"
                );
            } else {
                assert!(bf16_widen(h).is_nan());
            }
        }
        // Narrowing: every bf16 value, and values between neighbours (ties,
        // sticky bits).
        for hi in 0..=u16::MAX as u32 {
            for lo in [0u32, 0x7FFF, 0x8000, 0x8001, 0xFFFF] {
                let v = f32::from_bits((hi << 16) | lo);
                if v.is_nan() {
                    // Signalling NaNs are not quieted here, but they stay NaN;
                    // arithmetic never hands this function one.
                    if lo == 0 {
                        assert!(bf16_narrow(v).is_nan());
                    }
                    continue;
                }
                assert_eq!(
                    bf16_narrow(v).to_bits(),
                    bf16::from_f32(v).to_bits(),
                    "narrow {:#010x}",
                    v.to_bits()
                );
            }
        }
        // Arithmetic on widened NaNs keeps the low half zero.
        let nan = bf16_widen(bf16::from_bits(0x7FC1));
        assert_eq!((nan + 1.0).to_bits() & 0xFFFF, 0);
        assert!(bf16_narrow(nan * 2.0).is_nan());
    }

    /// Normal values of both signs over a range of exponents where neither
    /// type overflows or goes subnormal in one step.
    fn operands(n: usize, seed: u32) -> Vec<f64> {
        (0..n as u32)
            .map(|i| {
                let h = (i ^ seed).wrapping_mul(0x9E37_79B9) ^ seed.rotate_left(7);
                let mantissa = 1.0 + f64::from(h & 0xFFFF) / 65536.0;
                let exponent = ((h >> 16) % 13) as i32 - 6;
                let sign = if h >> 31 == 1 { -1.0 } else { 1.0 };
                sign * mantissa * 2f64.powi(exponent)
            })
            .collect()
    }

    /// Bit for bit, naming the first element that differs.
    fn assert_same<T: PartialEq + std::fmt::Debug>(got: &[T], want: &[T], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
            panic!(
                "{what}: element {i} is {:?}, expected {:?}",
                got[i], want[i]
            );
        }
    }

    fn exact(op: ReduceOp, a: f64, b: f64) -> f64 {
        match op {
            ReduceOp::Sum | ReduceOp::Avg => a + b,
            ReduceOp::Prod => a * b,
            ReduceOp::Min => a.min(b),
            ReduceOp::Max => a.max(b),
        }
    }

    /// Sums and products of two 16-bit floats are exact in f64, and
    /// rounding through f32 first cannot change the result (24 bits is
    /// more than twice the 11 or 8 bits kept, plus two), so every step
    /// must equal the exact result rounded once, by `half`.
    #[test]
    fn each_step_is_the_exact_result_rounded_once() {
        // Past the 1024-element blocks and the 8-lane tail of the kernels.
        let (a, b) = (operands(1037, 3), operands(1037, 11));
        let f16s = |v: &[f64]| v.iter().map(|&x| f16::from_f64(x)).collect::<Vec<_>>();
        let bf16s = |v: &[f64]| v.iter().map(|&x| bf16::from_f64(x)).collect::<Vec<_>>();
        for op in ReduceOp::ALL {
            let (x, y) = (f16s(&a), f16s(&b));
            let want: Vec<f16> = x
                .iter()
                .zip(&y)
                .map(|(p, q)| f16::from_f64(exact(op, p.to_f64(), q.to_f64())))
                .collect();
            let mut dispatched = x.clone();
            f16_combine(op, &mut dispatched, &y);
            let mut portable = x.clone();
            portable::f16_combine(op, &mut portable, &y);
            assert_same(&dispatched, &want, &format!("f16 {op}"));
            assert_same(&portable, &want, &format!("f16 {op}, portable"));

            let (x, y) = (bf16s(&a), bf16s(&b));
            let want: Vec<bf16> = x
                .iter()
                .zip(&y)
                .map(|(p, q)| bf16::from_f64(exact(op, p.to_f64(), q.to_f64())))
                .collect();
            let mut got = x.clone();
            bf16_combine(op, &mut got, &y);
            assert_same(&got, &want, &format!("bf16 {op}"));
        }
    }

    #[test]
    fn division_is_the_exact_quotient_rounded_once() {
        let a = operands(1500, 5);
        for by in [1usize, 3, 7, 16] {
            let mut h: Vec<f16> = a.iter().map(|&x| f16::from_f64(x)).collect();
            let want: Vec<f16> = h
                .iter()
                .map(|x| f16::from_f64(x.to_f64() / by as f64))
                .collect();
            f16_divide(&mut h, by);
            assert_same(&h, &want, &format!("f16 / {by}"));
            let mut b: Vec<bf16> = a.iter().map(|&x| bf16::from_f64(x)).collect();
            let want: Vec<bf16> = b
                .iter()
                .map(|x| bf16::from_f64(x.to_f64() / by as f64))
                .collect();
            bf16_divide(&mut b, by);
            assert_same(&b, &want, &format!("bf16 / {by}"));
        }
    }
}
