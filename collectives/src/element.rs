//! Element types the collectives move and reduce.

use crate::half_math;
use crate::op::ReduceOp;
use half::{bf16, f16};
use std::fmt;

/// Wire identity of an element type; part of the collective signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DType {
    F32 = 1,
    F64 = 2,
    F16 = 3,
    BF16 = 4,
    I32 = 5,
    I64 = 6,
    U8 = 7,
}

impl DType {
    pub const ALL: [DType; 7] = [
        DType::F32,
        DType::F64,
        DType::F16,
        DType::BF16,
        DType::I32,
        DType::I64,
        DType::U8,
    ];

    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F64 | DType::I64 => 8,
            DType::F16 | DType::BF16 => 2,
            DType::U8 => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::U8 => "u8",
        }
    }

    pub fn from_u8(v: u8) -> Option<DType> {
        DType::ALL.into_iter().find(|d| *d as u8 == v)
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64 | DType::F16 | DType::BF16)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        DType::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| {
                format!("unknown dtype `{s}` (expected one of f32, f64, f16, bf16, i32, i64, u8)")
            })
    }
}

/// A type the collectives can carry and combine.
///
/// `combine` is the hot loop of every reducing algorithm; each type gets the
/// loop shape that vectorises for it.
pub trait Element: bytemuck::Pod + PartialEq + fmt::Debug + Send + Sync + 'static {
    const DTYPE: DType;
    /// `acc[i] = acc[i] op src[i]`; `Avg` combines as `Sum` (see [`Element::divide`]).
    fn combine(op: ReduceOp, acc: &mut [Self], src: &[Self]);
    /// Finishes `Avg`: divides every element by the number of contributions.
    fn divide(buf: &mut [Self], by: usize);
    /// Lossless-enough view for error bounds in tests and benchmark checks.
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
}

#[inline(always)]
fn combine_with<T: Copy>(acc: &mut [T], src: &[T], f: impl Fn(T, T) -> T) {
    assert_eq!(acc.len(), src.len());
    for (a, b) in acc.iter_mut().zip(src) {
        *a = f(*a, *b);
    }
}

macro_rules! float_element {
    ($t:ty, $d:expr) => {
        impl Element for $t {
            const DTYPE: DType = $d;
            #[inline]
            fn combine(op: ReduceOp, acc: &mut [Self], src: &[Self]) {
                match op {
                    ReduceOp::Sum | ReduceOp::Avg => combine_with(acc, src, |a, b| a + b),
                    ReduceOp::Prod => combine_with(acc, src, |a, b| a * b),
                    ReduceOp::Min => combine_with(acc, src, <$t>::min),
                    ReduceOp::Max => combine_with(acc, src, <$t>::max),
                }
            }
            fn divide(buf: &mut [Self], by: usize) {
                let by = by as $t;
                buf.iter_mut().for_each(|v| *v /= by);
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn from_f64(v: f64) -> Self {
                v as $t
            }
        }
    };
}
float_element!(f32, DType::F32);
float_element!(f64, DType::F64);

macro_rules! int_element {
    ($t:ty, $d:expr) => {
        impl Element for $t {
            const DTYPE: DType = $d;
            #[inline]
            fn combine(op: ReduceOp, acc: &mut [Self], src: &[Self]) {
                // Wrapping arithmetic: overflow is the caller's business, and it
                // keeps every algorithm exactly equal to the sequential result.
                match op {
                    ReduceOp::Sum | ReduceOp::Avg => combine_with(acc, src, <$t>::wrapping_add),
                    ReduceOp::Prod => combine_with(acc, src, <$t>::wrapping_mul),
                    ReduceOp::Min => combine_with(acc, src, std::cmp::min),
                    ReduceOp::Max => combine_with(acc, src, std::cmp::max),
                }
            }
            /// Rounds toward zero. A count past the type's range exceeds
            /// every value, so each quotient is 0.
            fn divide(buf: &mut [Self], by: usize) {
                match <$t>::try_from(by) {
                    Ok(by) => buf.iter_mut().for_each(|v| *v /= by),
                    Err(_) => buf.fill(0),
                }
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn from_f64(v: f64) -> Self {
                v as $t
            }
        }
    };
}
int_element!(i32, DType::I32);
int_element!(i64, DType::I64);
int_element!(u8, DType::U8);

macro_rules! half_element {
    ($t:ty, $d:expr, $combine:path, $divide:path) => {
        impl Element for $t {
            const DTYPE: DType = $d;
            fn combine(op: ReduceOp, acc: &mut [Self], src: &[Self]) {
                $combine(op, acc, src)
            }
            fn divide(buf: &mut [Self], by: usize) {
                $divide(buf, by)
            }
            fn to_f64(self) -> f64 {
                self.to_f64()
            }
            fn from_f64(v: f64) -> Self {
                <$t>::from_f64(v)
            }
        }
    };
}
half_element!(
    f16,
    DType::F16,
    half_math::f16_combine,
    half_math::f16_divide
);
half_element!(
    bf16,
    DType::BF16,
    half_math::bf16_combine,
    half_math::bf16_divide
);

/// Reinterprets elements as bytes for the transport.
pub(crate) fn bytes<E: Element>(v: &[E]) -> &[u8] {
    bytemuck::cast_slice(v)
}

pub(crate) fn bytes_mut<E: Element>(v: &mut [E]) -> &mut [u8] {
    bytemuck::cast_slice_mut(v)
}
