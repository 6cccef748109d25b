//! What each node computes, with its attributes read and checked.
//!
//! Inputs are the node's own, in ONNX order; constant inputs (weights,
//! shapes, indices, axes) stay inputs and are resolved per batch size by the
//! specialisation (`spec.rs`) or read as weights when a program is built.

use mpinfer_kernels::cpu::{Binary, Conv2d, Gemm, Pool2d, PoolKind, Reduce, Unary};

/// Spatial axes of a convolution or pooling: 1-D runs as 2-D with a height
/// of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spatial {
    One,
    Two,
}

/// `auto_pad` of Conv and the pools; SAME pads depend on the input's size,
/// which is known when shapes are inferred.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoPad {
    NotSet,
    Valid,
    SameUpper,
    SameLower,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// `[x, w, b?]`. The explicit pads in `conv` apply when `auto_pad` is
    /// NotSet.
    Conv {
        conv: Conv2d,
        spatial: Spatial,
        auto_pad: AutoPad,
    },
    /// `[a, b, c?]`; `beta` is kept in `gemm`.
    Gemm(Gemm),
    /// `[a, b]`, numpy semantics.
    MatMul,
    Unary(Unary),
    /// `[a, b]` with numpy broadcasting.
    Binary(Binary),
    Pool {
        pool: Pool2d,
        spatial: Spatial,
        auto_pad: AutoPad,
    },
    GlobalPool(PoolKind),
    /// `[x, scale, bias, mean, var]`.
    BatchNorm {
        epsilon: f32,
    },
    /// `[x, scale, bias?]`, normalised over axes `axis..`.
    LayerNorm {
        axis: i64,
        epsilon: f32,
    },
    Softmax {
        axis: i64,
        coerced: bool,
    },
    /// `[x, axes?]`; `axes` here when given as an attribute.
    Reduce {
        op: Reduce,
        axes: Option<Vec<i64>>,
        keepdims: bool,
        noop_with_empty_axes: bool,
    },
    Flatten {
        axis: i64,
    },
    /// `[x, shape]`.
    Reshape {
        allowzero: bool,
    },
    Transpose {
        perm: Option<Vec<i64>>,
    },
    /// `[x, axes?]`.
    Squeeze {
        axes: Option<Vec<i64>>,
    },
    /// `[x, axes?]`.
    Unsqueeze {
        axes: Option<Vec<i64>>,
    },
    Concat {
        axis: i64,
    },
    /// `[x, split?]`; `outputs` is the node's output count.
    Split {
        axis: i64,
        split: Option<Vec<i64>>,
        outputs: usize,
    },
    /// `[data, starts, ends, axes?, steps?]`.
    Slice,
    /// `[data, indices]`.
    Gather {
        axis: i64,
    },
    /// `[x, shape]`.
    Expand,
    Identity,
    Shape {
        start: i64,
        end: Option<i64>,
    },
    Cast {
        to: Elem,
    },
    /// `[shape]`.
    ConstantOfShape {
        value: f64,
        elem: Elem,
    },
    /// `[start, limit, delta]`.
    Range,
    /// `[a, b]`: Equal, Less, Greater as 0/1 integers.
    Compare(Compare),
    Not,
    /// `[condition, x, y]`.
    Where,
    /// Integer remainder; `fmod` as ONNX says.
    Mod {
        fmod: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compare {
    Equal,
    Less,
    Greater,
}

/// Element kind of a value: mpinfer computes in f32 and evaluates integer
/// (and boolean) values while planning, never at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem {
    Float,
    Int,
    Bool,
}

impl Op {
    /// Ops on the activation path cheap enough that their cost is a pass
    /// over the data.
    pub fn is_movement(&self) -> bool {
        matches!(
            self,
            Op::Flatten { .. }
                | Op::Reshape { .. }
                | Op::Squeeze { .. }
                | Op::Unsqueeze { .. }
                | Op::Identity
        )
    }
}

/// Explicit pads `[top, left, bottom, right]` for a window over `input`
/// (height, width). SAME pads make the output `ceil(input / stride)`.
pub fn resolve_pads(
    auto_pad: AutoPad,
    explicit: [usize; 4],
    input: [usize; 2],
    kernel: [usize; 2],
    strides: [usize; 2],
    dilations: [usize; 2],
) -> [usize; 4] {
    match auto_pad {
        AutoPad::NotSet => explicit,
        AutoPad::Valid => [0; 4],
        AutoPad::SameUpper | AutoPad::SameLower => {
            let mut pads = [0; 4];
            for axis in 0..2 {
                let s = strides[axis].max(1);
                let span = dilations[axis] * (kernel[axis].max(1) - 1) + 1;
                let out = input[axis].div_ceil(s);
                let total = ((out.max(1) - 1) * s + span).saturating_sub(input[axis]);
                let (lo, hi) = if auto_pad == AutoPad::SameUpper {
                    (total / 2, total - total / 2)
                } else {
                    (total - total / 2, total / 2)
                };
                pads[axis] = lo;
                pads[axis + 2] = hi;
            }
            pads
        }
    }
}

/// `axis` counted from the end when negative, checked against `rank`
/// (`rank + 1` positions when `inclusive`).
pub fn norm_axis(axis: i64, rank: usize, inclusive: bool) -> Option<usize> {
    let r = rank as i64 + i64::from(inclusive);
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    (0..r).contains(&a).then_some(a as usize)
}

/// Gather's indices made non-negative (counted from the end when negative)
/// and checked against an axis of length `d`.
pub fn gather_indices(idx: &[i64], d: usize) -> Result<Vec<usize>, String> {
    let n = d as i64;
    idx.iter()
        .map(|&i| {
            let j = if i < 0 { i + n } else { i };
            (0..n)
                .contains(&j)
                .then_some(j as usize)
                .ok_or_else(|| format!("index {i} outside an axis of {d}"))
        })
        .collect()
}
