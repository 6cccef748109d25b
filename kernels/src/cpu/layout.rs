//! Data movement: Transpose, Slice, Concat, Split, Gather and Expand.
//!
//! Transpose, Slice and Expand are one strided copy: the output is written
//! in order while the input is read through per-axis strides (permuted,
//! multiplied by the step, or 0 along broadcast axes), with the index space
//! collapsed so that runs along the last axis are copied or filled whole.

use super::broadcast::broadcast_shape_for;
use super::strided::{
    broadcast_strides, check_len, collapse, contiguous_strides, for_each_offset, split_run,
};
use crate::error::{check_axis, shape_err, KernelError};
use crate::tensor::Tensor;

/// ONNX Transpose: output axis `i` is input axis `perm[i]`.
pub fn transpose(x: &Tensor, perm: &[usize]) -> Result<Tensor, KernelError> {
    check_len("Transpose", "data", x)?;
    let (shape, sx) = transpose_view(&x.shape, perm)?;
    let mut out = vec![0.0; x.data.len()];
    copy_strided(&mut out, &x.data, &shape, &sx, 0);
    Ok(Tensor { shape, data: out })
}

/// The output shape of Transpose, and the input strides along each output
/// axis.
pub(crate) fn transpose_view(
    shape: &[usize],
    perm: &[usize],
) -> Result<(Vec<usize>, Vec<isize>), KernelError> {
    let rank = shape.len();
    let mut seen = vec![false; rank];
    let permutes = perm.len() == rank
        && perm
            .iter()
            .all(|&p| p < rank && !std::mem::replace(&mut seen[p], true));
    if !permutes {
        return Err(KernelError::Invalid {
            op: "Transpose",
            what: format!("perm {perm:?} is not a permutation of {rank} axes"),
        });
    }
    let own = contiguous_strides(shape);
    let out = perm.iter().map(|&p| shape[p]).collect();
    Ok((out, perm.iter().map(|&p| own[p]).collect()))
}

/// ONNX Slice on indices the caller has already resolved: one
/// `(start, end, step)` per axis of `x`, `step != 0`, taking indices
/// `start, start + step, ..` while before `end` (below it for a positive
/// step, above it for a negative one), so `max(0, ceil((end - start) /
/// step))` of them. For a negative step `end` may be -1, meaning through
/// index 0. Every index taken must lie in `0..dim`; nothing is clamped here.
pub fn slice(
    x: &Tensor,
    starts: &[i64],
    ends: &[i64],
    steps: &[i64],
) -> Result<Tensor, KernelError> {
    check_len("Slice", "data", x)?;
    let (shape, sx, base) = slice_view(&x.shape, starts, ends, steps)?;
    let mut out = vec![0.0; shape.iter().product()];
    if !out.is_empty() {
        copy_strided(&mut out, &x.data, &shape, &sx, base);
    }
    Ok(Tensor { shape, data: out })
}

/// The output shape of [`slice`], the input strides along each output axis
/// and the input offset of the first element taken.
pub(crate) fn slice_view(
    in_shape: &[usize],
    starts: &[i64],
    ends: &[i64],
    steps: &[i64],
) -> Result<(Vec<usize>, Vec<isize>, isize), KernelError> {
    const OP: &str = "Slice";
    let rank = in_shape.len();
    if starts.len() != rank || ends.len() != rank || steps.len() != rank {
        return Err(KernelError::Invalid {
            op: OP,
            what: format!(
                "starts {starts:?}, ends {ends:?} and steps {steps:?} need one entry per axis of {in_shape:?}"
            ),
        });
    }
    let own = contiguous_strides(in_shape);
    let mut shape = Vec::with_capacity(rank);
    let mut sx = Vec::with_capacity(rank);
    let mut base = 0isize;
    for ax in 0..rank {
        let (start, step, dim) = (starts[ax], steps[ax], in_shape[ax] as i64);
        let len = slice_len(start, ends[ax], step).ok_or_else(|| KernelError::Invalid {
            op: OP,
            what: format!("step 0 on axis {ax}"),
        })?;
        let last = start as i128 + (len as i128 - 1) * step as i128;
        let inside = |i: i128| (0..dim as i128).contains(&i);
        if len > 0 && !(inside(start as i128) && inside(last)) {
            return Err(KernelError::Invalid {
                op: OP,
                what: format!(
                    "axis {ax} of extent {dim}: start {start}, end {}, step {step} reach outside it",
                    ends[ax]
                ),
            });
        }
        // An axis taking at most one index is never stepped along, so
        // its step (possibly huge) must not reach the arithmetic.
        shape.push(len);
        sx.push(if len > 1 { own[ax] * step as isize } else { 0 });
        if len > 0 {
            base += own[ax] * start as isize;
        }
    }
    Ok((shape, sx, base))
}

/// How many indices `start, start + step, ..` fall before `end`; `None`
/// for a zero step.
fn slice_len(start: i64, end: i64, step: i64) -> Option<usize> {
    let (span, stride) = match step {
        0 => return None,
        s if s > 0 => (end as i128 - start as i128, s as i128),
        s => (start as i128 - end as i128, -(s as i128)),
    };
    Some(if span > 0 {
        ((span + stride - 1) / stride) as usize
    } else {
        0
    })
}

/// ONNX Concat: the inputs joined along `axis`, all other extents equal.
pub fn concat(inputs: &[&Tensor], axis: usize) -> Result<Tensor, KernelError> {
    for t in inputs {
        check_len("Concat", "input", t)?;
    }
    let shapes: Vec<&[usize]> = inputs.iter().map(|t| &t.shape[..]).collect();
    let shape = concat_shape(&shapes, axis)?;
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let mut data = Vec::with_capacity(shape.iter().product());
    for o in 0..outer {
        for t in inputs {
            let block = t.shape[axis] * inner;
            data.extend_from_slice(&t.data[o * block..(o + 1) * block]);
        }
    }
    Ok(Tensor { shape, data })
}

/// The shape of the inputs of `shapes` joined along `axis`.
pub(crate) fn concat_shape(shapes: &[&[usize]], axis: usize) -> Result<Vec<usize>, KernelError> {
    const OP: &str = "Concat";
    let first = shapes.first().ok_or_else(|| KernelError::Invalid {
        op: OP,
        what: "no inputs".into(),
    })?;
    check_axis(OP, "input", first, axis)?;
    let mut shape = first.to_vec();
    shape[axis] = 0;
    for s in shapes {
        let fits = s.len() == shape.len()
            && (s.iter().zip(*first).enumerate()).all(|(i, (a, b))| i == axis || a == b);
        if !fits {
            return Err(shape_err(
                OP,
                "input",
                s,
                format!("{first:?} but for axis {axis}"),
            ));
        }
        shape[axis] += s[axis];
    }
    Ok(shape)
}

/// ONNX Split: `x` cut along `axis` into parts of `sizes` (summing to the
/// axis' extent).
pub fn split(x: &Tensor, axis: usize, sizes: &[usize]) -> Result<Vec<Tensor>, KernelError> {
    check_len("Split", "input", x)?;
    check_split(&x.shape, axis, sizes)?;
    let dim = x.shape[axis];
    let outer: usize = x.shape[..axis].iter().product();
    let inner: usize = x.shape[axis + 1..].iter().product();
    let mut first = 0;
    let parts = sizes.iter().map(|&size| {
        let mut shape = x.shape.clone();
        shape[axis] = size;
        let mut data = Vec::with_capacity(outer * size * inner);
        for o in 0..outer {
            let from = (o * dim + first) * inner;
            data.extend_from_slice(&x.data[from..from + size * inner]);
        }
        first += size;
        Tensor { shape, data }
    });
    Ok(parts.collect())
}

/// Refuses an axis `shape` lacks, or sizes not adding up to its extent.
pub(crate) fn check_split(
    shape: &[usize],
    axis: usize,
    sizes: &[usize],
) -> Result<(), KernelError> {
    const OP: &str = "Split";
    check_axis(OP, "input", shape, axis)?;
    if sizes.iter().sum::<usize>() != shape[axis] {
        return Err(KernelError::Invalid {
            op: OP,
            what: format!("sizes {sizes:?} do not add up to axis {axis} of {shape:?}"),
        });
    }
    Ok(())
}

/// ONNX Gather: output `[x.shape[..axis], indices_shape, x.shape[axis+1..]]`
/// taking, along `axis`, the slice at each index in turn (`indices` row-major
/// over `indices_shape`, which is `[]` for one scalar index).
pub fn gather(
    x: &Tensor,
    axis: usize,
    indices: &[usize],
    indices_shape: &[usize],
) -> Result<Tensor, KernelError> {
    check_len("Gather", "data", x)?;
    let shape = gather_shape(&x.shape, axis, indices, indices_shape)?;
    let dim = x.shape[axis];
    let outer: usize = x.shape[..axis].iter().product();
    let inner: usize = x.shape[axis + 1..].iter().product();
    let mut data = Vec::with_capacity(shape.iter().product());
    for o in 0..outer {
        for &i in indices {
            let from = (o * dim + i) * inner;
            data.extend_from_slice(&x.data[from..from + inner]);
        }
    }
    Ok(Tensor { shape, data })
}

/// The output shape of [`gather`], once the indices are checked.
pub(crate) fn gather_shape(
    in_shape: &[usize],
    axis: usize,
    indices: &[usize],
    indices_shape: &[usize],
) -> Result<Vec<usize>, KernelError> {
    const OP: &str = "Gather";
    check_axis(OP, "data", in_shape, axis)?;
    if indices_shape.iter().product::<usize>() != indices.len() {
        return Err(shape_err(
            OP,
            "indices",
            indices_shape,
            format!("{} values", indices.len()),
        ));
    }
    let dim = in_shape[axis];
    if let Some(bad) = indices.iter().find(|&&i| i >= dim) {
        return Err(KernelError::Invalid {
            op: OP,
            what: format!("index {bad} is outside axis {axis} of extent {dim}"),
        });
    }
    Ok([&in_shape[..axis], indices_shape, &in_shape[axis + 1..]].concat())
}

/// ONNX Expand: `x` broadcast to `broadcast_shape(x.shape, shape)`.
pub fn expand(x: &Tensor, shape: &[usize]) -> Result<Tensor, KernelError> {
    check_len("Expand", "input", x)?;
    let out_shape = broadcast_shape_for("Expand", &x.shape, shape)?;
    let sx = broadcast_strides(&x.shape, out_shape.len());
    let mut out = vec![0.0; out_shape.iter().product()];
    if !out.is_empty() {
        copy_strided(&mut out, &x.data, &out_shape, &sx, 0);
    }
    Ok(Tensor {
        shape: out_shape,
        data: out,
    })
}

/// Writes all of `out` (contiguous over `dims`) from `src` read at
/// `base + Σ index[i] · sx[i]`.
fn copy_strided(out: &mut [f32], src: &[f32], dims: &[usize], sx: &[isize], base: isize) {
    let so = contiguous_strides(dims);
    let (dims, [so, sx]) = collapse(dims, [&so, sx]);
    let (outer, run) = split_run(&dims);
    let step = sx.last().copied().unwrap_or(0);
    let unit_axis = sx[..outer.len()].iter().position(|&s| s == 1);
    if let (Some(q), true) = (unit_axis, step.abs() > 1) {
        return copy_tiled(out, src, &dims, &so, &sx, q, base);
    }
    for_each_offset(outer, [&so, &sx], [0, base], |[o, i]| {
        let dst = &mut out[o..o + run];
        match step {
            1 => dst.copy_from_slice(&src[i..i + run]),
            0 => dst.fill(src[i]),
            s => {
                for (j, d) in dst.iter_mut().enumerate() {
                    *d = src[(i as isize + j as isize * s) as usize];
                }
            }
        }
    });
}

/// The strided copy for a true transpose: output runs along the last axis
/// read the input with a large stride, while output axis `q` reads it
/// contiguously. Copying in square tiles of the (q, last) plane touches
/// each input cache line once per tile instead of once per element.
fn copy_tiled(
    out: &mut [f32],
    src: &[f32],
    dims: &[usize],
    so: &[isize],
    sx: &[isize],
    q: usize,
    base: isize,
) {
    const TILE: usize = 16;
    let last = dims.len() - 1;
    let (rows, run) = (dims[q], dims[last]);
    let (row_out, step) = (so[q], sx[last]);
    let keep =
        |v: &[isize]| -> Vec<isize> { (0..last).filter(|&i| i != q).map(|i| v[i]).collect() };
    let rest: Vec<usize> = (0..last).filter(|&i| i != q).map(|i| dims[i]).collect();
    let (so_rest, sx_rest) = (keep(so), keep(sx));
    for_each_offset(&rest, [&so_rest, &sx_rest], [0, base], |[o, i]| {
        for r0 in (0..rows).step_by(TILE) {
            for c0 in (0..run).step_by(TILE) {
                for r in r0..(r0 + TILE).min(rows) {
                    let dst = o as isize + r as isize * row_out;
                    let from = i as isize + r as isize;
                    for c in c0..(c0 + TILE).min(run) {
                        out[(dst + c as isize) as usize] = src[(from + c as isize * step) as usize];
                    }
                }
            }
        }
    });
}
