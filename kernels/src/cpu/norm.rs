//! Normalisations: ONNX LayerNormalization, and BatchNormalization as the
//! per-channel affine map it is at inference when no convolution absorbed it.

use super::strided::check_len;
use crate::error::{check_axis, shape_err, KernelError};
use crate::tensor::Tensor;

/// ONNX LayerNormalization: each block over axes `axis..rank` becomes
/// `(x - mean) / sqrt(var + epsilon) · scale + bias`, `var` the population
/// variance. `scale` and `bias` hold one value per element of a block (the
/// caller broadcasts them to that length). Mean and variance are summed in
/// f64, the variance over the deviations from the mean (two passes), so
/// rows with a large mean lose nothing to cancellation.
pub fn layer_norm(
    x: &Tensor,
    axis: usize,
    scale: Option<&[f32]>,
    bias: Option<&[f32]>,
    epsilon: f32,
) -> Result<Tensor, KernelError> {
    const OP: &str = "LayerNormalization";
    check_len(OP, "X", x)?;
    check_axis(OP, "X", &x.shape, axis)?;
    let block: usize = x.shape[axis..].iter().product();
    for (what, p) in [("scale", scale), ("bias", bias)] {
        if let Some(p) = p.filter(|p| p.len() != block) {
            return Err(shape_err(OP, what, &[p.len()], format!("{block} values")));
        }
    }
    let mut y = x.clone();
    if block == 0 {
        return Ok(y);
    }
    for row in y.data.chunks_mut(block) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / block as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / block as f64;
        let inv_std = (1.0 / (var + epsilon as f64).sqrt()) as f32;
        let mean = mean as f32;
        row.iter_mut().for_each(|v| *v = (*v - mean) * inv_std);
        if let Some(s) = scale {
            row.iter_mut().zip(s).for_each(|(v, s)| *v *= s);
        }
        if let Some(b) = bias {
            row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
        }
    }
    Ok(y)
}

/// `x[:, c, ..] = x[:, c, ..] · scale[c] + shift[c]`: inference-time
/// BatchNormalization with `scale = γ / sqrt(var + ε)` and
/// `shift = β - mean · scale` worked out by the caller.
pub fn channel_affine(x: &mut Tensor, scale: &[f32], shift: &[f32]) -> Result<(), KernelError> {
    const OP: &str = "BatchNormalization";
    check_len(OP, "X", x)?;
    if x.shape.len() < 2 {
        return Err(shape_err(OP, "X", &x.shape, "at least two dimensions"));
    }
    let channels = x.shape[1];
    for (what, p) in [("scale", scale), ("shift", shift)] {
        if p.len() != channels {
            return Err(shape_err(
                OP,
                what,
                &[p.len()],
                format!("{channels} values (one per channel)"),
            ));
        }
    }
    let plane: usize = x.shape[2..].iter().product();
    if plane == 0 {
        return Ok(());
    }
    for (i, run) in x.data.chunks_mut(plane).enumerate() {
        let (s, t) = (scale[i % channels], shift[i % channels]);
        run.iter_mut().for_each(|v| *v = *v * s + t);
    }
    Ok(())
}
