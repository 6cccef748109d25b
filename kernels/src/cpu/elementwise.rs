//! ReLU, softmax and flatten.

use crate::error::{check_axis, shape_err, KernelError};
use crate::tensor::Tensor;

pub fn relu(x: &mut Tensor) {
    x.data.iter_mut().for_each(|v| *v = relu_keep_nan(*v));
}

/// `f32::max(v, 0)` would turn NaN into 0 and hide a bad input; a NaN must
/// reach the output row of the sample it came from.
#[inline(always)]
pub(crate) fn relu_keep_nan(v: f32) -> f32 {
    if v < 0.0 {
        0.0
    } else {
        v
    }
}

/// ONNX Flatten: `[d0 .. d(axis-1)] x [d(axis) ..]` as two dimensions.
pub fn flatten(x: Tensor, axis: usize) -> Result<Tensor, KernelError> {
    if axis > x.shape.len() {
        return Err(shape_err(
            "Flatten",
            "input",
            &x.shape,
            format!("at least {axis} dimensions"),
        ));
    }
    let outer = x.shape[..axis].iter().product();
    let inner = x.shape[axis..].iter().product();
    Ok(x.reshape(vec![outer, inner]))
}

/// Softmax along one axis (ONNX opset 13 and later).
pub fn softmax(x: &mut Tensor, axis: usize) -> Result<(), KernelError> {
    check_axis("Softmax", "input", &x.shape, axis)?;
    let dim = x.shape[axis];
    let inner: usize = x.shape[axis + 1..].iter().product();
    if dim == 0 || x.data.is_empty() {
        return Ok(());
    }
    if inner == 1 {
        x.data.chunks_mut(dim).for_each(softmax_row);
        return Ok(());
    }
    // Along a middle axis, the values of one softmax lie `inner` apart;
    // sweeping whole rows of `inner` at a time, with a running max and sum
    // per column, reads memory in order (same operations per column, in
    // the same order, as one softmax at a time).
    let mut max = vec![0.0f32; inner];
    let mut sum = vec![0.0f32; inner];
    for block in x.data.chunks_mut(dim * inner) {
        max.fill(f32::NEG_INFINITY);
        sum.fill(0.0);
        for row in block.chunks(inner) {
            max.iter_mut().zip(row).for_each(|(m, v)| *m = m.max(*v));
        }
        for row in block.chunks_mut(inner) {
            for ((v, m), s) in row.iter_mut().zip(&max).zip(&mut sum) {
                *v = (*v - m).exp();
                *s += *v;
            }
        }
        for row in block.chunks_mut(inner) {
            row.iter_mut().zip(&sum).for_each(|(v, s)| *v /= s);
        }
    }
    Ok(())
}

fn softmax_row(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    row.iter_mut().for_each(|v| *v /= sum);
}

/// Softmax before opset 13: the input is seen as 2-D, split at `axis`, and
/// each row of that view is normalised as a whole.
pub fn softmax_coerced(x: &mut Tensor, axis: usize) -> Result<(), KernelError> {
    if axis > x.shape.len() {
        return Err(shape_err(
            "Softmax",
            "input",
            &x.shape,
            format!("at least {axis} dimensions"),
        ));
    }
    let cols: usize = x.shape[axis..].iter().product();
    let mut view = Tensor {
        shape: vec![x.data.len() / cols.max(1), cols],
        data: std::mem::take(&mut x.data),
    };
    let result = softmax(&mut view, 1);
    x.data = view.data;
    result
}
