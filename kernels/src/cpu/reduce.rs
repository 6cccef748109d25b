//! ONNX ReduceMean, ReduceSum, ReduceMax, ReduceMin, ReduceProd, ReduceL2
//! and ReduceSumSquare over any set of axes.
//!
//! The input is walked once in memory order. Its index space is collapsed
//! into alternating kept and reduced groups of axes, so reducing trailing
//! axes (global pooling over `[2, 3]`, a LayerNorm's mean over the last
//! axis) folds whole contiguous rows, and reducing a leading or middle group
//! adds whole rows into the output. Accumulators are f64.

use super::strided::{check_len, collapse, contiguous_strides, for_each_offset, split_run};
use crate::error::KernelError;
use crate::tensor::Tensor;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Reduce {
    Mean,
    Sum,
    Max,
    Min,
    Prod,
    /// `sqrt(Σ x²)`.
    L2,
    SumSquare,
}

impl Reduce {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Reduce::Mean => "ReduceMean",
            Reduce::Sum => "ReduceSum",
            Reduce::Max => "ReduceMax",
            Reduce::Min => "ReduceMin",
            Reduce::Prod => "ReduceProd",
            Reduce::L2 => "ReduceL2",
            Reduce::SumSquare => "ReduceSumSquare",
        }
    }

    /// What a reduction over no values gives (ONNX: the identity of the
    /// combining operation; Mean's 0 becomes 0/0 = NaN).
    fn identity(self) -> f64 {
        match self {
            Reduce::Max => f64::NEG_INFINITY,
            Reduce::Min => f64::INFINITY,
            Reduce::Prod => 1.0,
            _ => 0.0,
        }
    }

    /// Which axes of `shape` `axes` reduces (each below the rank, none
    /// twice; none means all).
    pub(crate) fn reduced_axes(
        self,
        shape: &[usize],
        axes: &[usize],
    ) -> Result<Vec<bool>, KernelError> {
        let rank = shape.len();
        let mut reduced = vec![axes.is_empty(); rank];
        for &ax in axes {
            if ax >= rank || reduced[ax] {
                return Err(KernelError::Invalid {
                    op: self.name(),
                    what: format!("axes {axes:?} for an input of shape {shape:?}"),
                });
            }
            reduced[ax] = true;
        }
        Ok(reduced)
    }

    fn finish(self, acc: f64, count: usize) -> f32 {
        match self {
            Reduce::Mean => (acc / count as f64) as f32,
            Reduce::L2 => acc.sqrt() as f32,
            _ => acc as f32,
        }
    }
}

/// Reduces `x` over `axes` (each below the rank, none twice; empty means
/// every axis). With `keepdims` the reduced axes stay as extent 1, else they
/// are dropped. Max and Min propagate NaN.
pub fn reduce(
    op: Reduce,
    x: &Tensor,
    axes: &[usize],
    keepdims: bool,
) -> Result<Tensor, KernelError> {
    check_len(op.name(), "data", x)?;
    let reduced = op.reduced_axes(&x.shape, axes)?;
    let kept: Vec<usize> = (x.shape.iter().zip(&reduced))
        .map(|(&d, &r)| if r { 1 } else { d })
        .collect();
    let count: usize = (x.shape.iter().zip(&reduced))
        .filter_map(|(&d, &r)| r.then_some(d))
        .product();
    let mut acc = vec![op.identity(); kept.iter().product()];
    if !x.data.is_empty() {
        let mut so = contiguous_strides(&kept);
        for (s, _) in so.iter_mut().zip(&reduced).filter(|(_, &r)| r) {
            *s = 0;
        }
        let sx = contiguous_strides(&x.shape);
        let (dims, [sx, so]) = collapse(&x.shape, [&sx, &so]);
        let (outer, run) = split_run(&dims);
        let folds = so.last().is_none_or(|&s| s == 0);
        for_each_offset(outer, [&sx, &so], [0, 0], |[i, o]| {
            let row = &x.data[i..i + run];
            if folds {
                acc[o] = fold(op, acc[o], row);
            } else {
                accumulate(op, &mut acc[o..o + run], row);
            }
        });
    }
    let shape = output_shape(&x.shape, &reduced, keepdims);
    let data = acc.into_iter().map(|a| op.finish(a, count)).collect();
    Ok(Tensor { shape, data })
}

/// The reduced axes kept as extent 1, or dropped.
pub(crate) fn output_shape(shape: &[usize], reduced: &[bool], keepdims: bool) -> Vec<usize> {
    (shape.iter().zip(reduced))
        .filter_map(|(&d, &r)| match (r, keepdims) {
            (false, _) => Some(d),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect()
}

fn fold(op: Reduce, init: f64, row: &[f32]) -> f64 {
    match op {
        Reduce::Mean | Reduce::Sum => fold_with(init, row, |v| v, |a, b| a + b),
        Reduce::Max => fold_with(init, row, |v| v, max_keep_nan),
        Reduce::Min => fold_with(init, row, |v| v, min_keep_nan),
        Reduce::Prod => fold_with(init, row, |v| v, |a, b| a * b),
        Reduce::L2 | Reduce::SumSquare => fold_with(init, row, |v| v * v, |a, b| a + b),
    }
}

/// `init ⊕ map(row[0]) ⊕ map(row[1]) ⊕ ...`, in four interleaved partial
/// results so the loop does not wait on one accumulator.
#[inline(always)]
fn fold_with(
    init: f64,
    row: &[f32],
    map: impl Fn(f64) -> f64,
    combine: impl Fn(f64, f64) -> f64,
) -> f64 {
    let chunks = row.chunks_exact(4);
    let tail = chunks.remainder();
    let mut lanes: Option<[f64; 4]> = None;
    for c in chunks {
        let m = [0, 1, 2, 3].map(|j| map(c[j] as f64));
        lanes = Some(match lanes {
            None => m,
            Some(l) => [0, 1, 2, 3].map(|j| combine(l[j], m[j])),
        });
    }
    let mut acc = init;
    if let Some(l) = lanes {
        acc = combine(acc, combine(combine(l[0], l[1]), combine(l[2], l[3])));
    }
    tail.iter().fold(acc, |a, &v| combine(a, map(v as f64)))
}

fn accumulate(op: Reduce, acc: &mut [f64], row: &[f32]) {
    match op {
        Reduce::Mean | Reduce::Sum => accumulate_with(acc, row, |a, v| a + v),
        Reduce::Max => accumulate_with(acc, row, max_keep_nan),
        Reduce::Min => accumulate_with(acc, row, min_keep_nan),
        Reduce::Prod => accumulate_with(acc, row, |a, v| a * v),
        Reduce::L2 | Reduce::SumSquare => accumulate_with(acc, row, |a, v| a + v * v),
    }
}

#[inline(always)]
fn accumulate_with(acc: &mut [f64], row: &[f32], step: impl Fn(f64, f64) -> f64) {
    acc.iter_mut()
        .zip(row)
        .for_each(|(a, &v)| *a = step(*a, v as f64));
}

#[inline(always)]
fn max_keep_nan(a: f64, b: f64) -> f64 {
    if a > b || a.is_nan() {
        a
    } else {
        b
    }
}

#[inline(always)]
fn min_keep_nan(a: f64, b: f64) -> f64 {
    if a < b || a.is_nan() {
        a
    } else {
        b
    }
}
