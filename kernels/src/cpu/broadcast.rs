//! Element-wise binary ops with numpy broadcasting (ONNX Add, Sub, Mul, Div,
//! Pow, Max, Min).
//!
//! The output's index space is collapsed first (axes of extent 1 dropped,
//! neighbours merged where both operands walk them as one run), so the
//! common cases (equal shapes, a scalar operand, a per-channel `[C, 1, 1]`
//! or per-feature `[D]` operand) become a few long rows whose inner loop
//! pairs two slices or a slice with one value, with no index arithmetic per
//! element.

use super::strided::{
    broadcast_strides, check_len, collapse, contiguous_strides, for_each_offset, split_run,
};
use crate::error::{shape_err, KernelError};
use crate::tensor::Tensor;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Max,
    Min,
}

impl Binary {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Binary::Add => "Add",
            Binary::Sub => "Sub",
            Binary::Mul => "Mul",
            Binary::Div => "Div",
            Binary::Pow => "Pow",
            Binary::Max => "Max",
            Binary::Min => "Min",
        }
    }
}

/// The shape both operands broadcast to under numpy's rules: ranks aligned
/// on the right, each pair of extents equal or one of them 1 (so an extent
/// of 0 meets only 0 or 1).
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>, KernelError> {
    broadcast_shape_for("broadcast", a, b)
}

pub(crate) fn broadcast_shape_for(
    op: &'static str,
    a: &[usize],
    b: &[usize],
) -> Result<Vec<usize>, KernelError> {
    let rank = a.len().max(b.len());
    let extent = |s: &[usize], i: usize| (i + s.len()).checked_sub(rank).map_or(1, |j| s[j]);
    (0..rank)
        .map(|i| match (extent(a, i), extent(b, i)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            _ => Err(KernelError::Invalid {
                op,
                what: format!("shapes {a:?} and {b:?} do not broadcast"),
            }),
        })
        .collect()
}

/// `op(a, b)` broadcast to [`broadcast_shape`] of the two.
pub fn binary(op: Binary, a: &Tensor, b: &Tensor) -> Result<Tensor, KernelError> {
    let shape = broadcast_shape_for(op.name(), &a.shape, &b.shape)?;
    let mut out = vec![0.0; shape.iter().product()];
    binary_into(op, a, b, &mut out)?;
    Ok(Tensor { shape, data: out })
}

/// [`binary`] into `out`, which holds the broadcast shape's element count;
/// every element is written.
pub fn binary_into(op: Binary, a: &Tensor, b: &Tensor, out: &mut [f32]) -> Result<(), KernelError> {
    let name = op.name();
    check_len(name, "A", a)?;
    check_len(name, "B", b)?;
    let shape = broadcast_shape_for(name, &a.shape, &b.shape)?;
    let count: usize = shape.iter().product();
    if out.len() != count {
        return Err(shape_err(
            name,
            "output",
            &[out.len()],
            format!("{count} values ({shape:?})"),
        ));
    }
    if count == 0 {
        return Ok(());
    }
    let so = contiguous_strides(&shape);
    let sa = broadcast_strides(&a.shape, shape.len());
    let sb = broadcast_strides(&b.shape, shape.len());
    let (dims, [so, sa, sb]) = collapse(&shape, [&so, &sa, &sb]);
    let (outer, run) = split_run(&dims);
    let (ia, ib) = (inner(&sa), inner(&sb));
    for_each_offset(outer, [&so, &sa, &sb], [0; 3], |[o, x, y]| {
        row(op, &mut out[o..o + run], &a.data[x..], ia, &b.data[y..], ib);
    });
    Ok(())
}

/// `a = op(a, b)` where `b` broadcasts to `a`'s shape, without a second
/// buffer.
pub fn binary_in_place(op: Binary, a: &mut Tensor, b: &Tensor) -> Result<(), KernelError> {
    let name = op.name();
    check_len(name, "A", a)?;
    check_len(name, "B", b)?;
    if broadcast_shape_for(name, &a.shape, &b.shape)? != a.shape {
        return Err(shape_err(
            name,
            "B",
            &b.shape,
            format!("broadcastable to A's shape {:?}", a.shape),
        ));
    }
    if a.data.is_empty() {
        return Ok(());
    }
    let so = contiguous_strides(&a.shape);
    let sb = broadcast_strides(&b.shape, a.shape.len());
    let (dims, [so, sb]) = collapse(&a.shape, [&so, &sb]);
    let (outer, run) = split_run(&dims);
    let ib = inner(&sb);
    for_each_offset(outer, [&so, &sb], [0; 2], |[o, y]| {
        row_in_place(op, &mut a.data[o..o + run], &b.data[y..], ib);
    });
    Ok(())
}

/// The innermost stride after collapsing: 1 for an operand that runs along
/// the last axis, 0 for one broadcast along it.
fn inner(strides: &[isize]) -> isize {
    let s = strides.last().copied().unwrap_or(0);
    debug_assert!(s == 0 || s == 1);
    s
}

fn row(op: Binary, dst: &mut [f32], a: &[f32], ia: isize, b: &[f32], ib: isize) {
    match op {
        Binary::Add => row_with(|x, y| x + y, dst, a, ia, b, ib),
        Binary::Sub => row_with(|x, y| x - y, dst, a, ia, b, ib),
        Binary::Mul => row_with(|x, y| x * y, dst, a, ia, b, ib),
        Binary::Div => row_with(|x, y| x / y, dst, a, ia, b, ib),
        Binary::Pow => row_with(f32::powf, dst, a, ia, b, ib),
        Binary::Max => row_with(max_keep_nan, dst, a, ia, b, ib),
        Binary::Min => row_with(min_keep_nan, dst, a, ia, b, ib),
    }
}

#[inline(always)]
fn row_with(
    f: impl Fn(f32, f32) -> f32,
    dst: &mut [f32],
    a: &[f32],
    ia: isize,
    b: &[f32],
    ib: isize,
) {
    let n = dst.len();
    match (ia, ib) {
        (0, 0) => dst.fill(f(a[0], b[0])),
        (0, _) => {
            let x = a[0];
            dst.iter_mut().zip(&b[..n]).for_each(|(d, y)| *d = f(x, *y));
        }
        (_, 0) => {
            let y = b[0];
            dst.iter_mut().zip(&a[..n]).for_each(|(d, x)| *d = f(*x, y));
        }
        _ => {
            let pairs = a[..n].iter().zip(&b[..n]);
            dst.iter_mut()
                .zip(pairs)
                .for_each(|(d, (x, y))| *d = f(*x, *y));
        }
    }
}

fn row_in_place(op: Binary, dst: &mut [f32], b: &[f32], ib: isize) {
    match op {
        Binary::Add => row_in_place_with(|x, y| x + y, dst, b, ib),
        Binary::Sub => row_in_place_with(|x, y| x - y, dst, b, ib),
        Binary::Mul => row_in_place_with(|x, y| x * y, dst, b, ib),
        Binary::Div => row_in_place_with(|x, y| x / y, dst, b, ib),
        Binary::Pow => row_in_place_with(f32::powf, dst, b, ib),
        Binary::Max => row_in_place_with(max_keep_nan, dst, b, ib),
        Binary::Min => row_in_place_with(min_keep_nan, dst, b, ib),
    }
}

#[inline(always)]
fn row_in_place_with(f: impl Fn(f32, f32) -> f32, dst: &mut [f32], b: &[f32], ib: isize) {
    if ib == 0 {
        let y = b[0];
        dst.iter_mut().for_each(|d| *d = f(*d, y));
    } else {
        let n = dst.len();
        dst.iter_mut()
            .zip(&b[..n])
            .for_each(|(d, y)| *d = f(*d, *y));
    }
}

/// numpy's `maximum`: a NaN on either side is the result (`f32::max` would
/// drop it and hide a bad input).
#[inline(always)]
pub(crate) fn max_keep_nan(x: f32, y: f32) -> f32 {
    if x > y || x.is_nan() {
        x
    } else {
        y
    }
}

/// numpy's `minimum`, NaN kept as in [`max_keep_nan`].
#[inline(always)]
pub(crate) fn min_keep_nan(x: f32, y: f32) -> f32 {
    if x < y || x.is_nan() {
        x
    } else {
        y
    }
}
