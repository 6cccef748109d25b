//! Normalisations and per-channel affine maps on the device (`norm.cu`):
//! LayerNormalization, inference-time BatchNormalization and a bias added
//! along one axis.

use cudarc::driver::PushKernelArg;

use super::{check_dtypes, dtype_suffix, int, launch_1d, launch_error, nvrtc, Gpu, GpuTensor};
use crate::error::{check_axis, shape_err, KernelError};
use crate::tensor::StoredDType;

/// Rows per block of the layer norm: one warp each.
const ROWS_PER_BLOCK: usize = 8;

const CHANNEL_AFFINE: &str = "channel_affine";
const LAYER_NORM: &str = "layer_norm";

fn kernel_name(kernel: &str, dtype: StoredDType) -> String {
    format!("{kernel}_{}", dtype_suffix(dtype))
}

pub(crate) fn kernel_names(dtype: StoredDType) -> Vec<String> {
    [CHANNEL_AFFINE, LAYER_NORM]
        .iter()
        .map(|k| kernel_name(k, dtype))
        .collect()
}

/// Refuses a per-channel parameter that does not hold `channels` values.
fn check_channels(
    op: &'static str,
    what: &'static str,
    p: &GpuTensor,
    channels: usize,
) -> Result<(), KernelError> {
    if p.len() == channels {
        Ok(())
    } else {
        Err(shape_err(
            op,
            what,
            p.shape(),
            format!("{channels} values (one per channel)"),
        ))
    }
}

impl Gpu {
    /// `x[:, c, ..] = x[:, c, ..] · scale[c] + shift[c]`, in place, as
    /// [`crate::cpu::channel_affine`].
    pub fn channel_affine(
        &self,
        x: &mut GpuTensor,
        scale: &GpuTensor,
        shift: &GpuTensor,
    ) -> Result<(), KernelError> {
        const OP: &str = "BatchNormalization";
        self.check_owner(OP, &[&*x, scale, shift])?;
        check_dtypes(OP, &[&*x, scale, shift])?;
        if x.shape().len() < 2 {
            return Err(shape_err(OP, "X", x.shape(), "at least two dimensions"));
        }
        let channels = x.shape()[1];
        check_channels(OP, "scale", scale, channels)?;
        check_channels(OP, "shift", shift, channels)?;
        let inner = x.shape()[2..].iter().product();
        let channels = int(OP, "channels", channels)?;
        self.launch_channel_affine(x, Some(scale), shift, inner, channels)
    }

    /// `x[.., c, ..] += bias[c]` along `axis`, in place.
    pub fn add_bias(
        &self,
        x: &mut GpuTensor,
        bias: &GpuTensor,
        axis: usize,
    ) -> Result<(), KernelError> {
        const OP: &str = "Add";
        self.check_owner(OP, &[&*x, bias])?;
        check_dtypes(OP, &[&*x, bias])?;
        check_axis(OP, "X", x.shape(), axis)?;
        let channels = x.shape()[axis];
        check_channels(OP, "bias", bias, channels)?;
        let inner = x.shape()[axis + 1..].iter().product();
        let channels = int(OP, "channels", channels)?;
        self.launch_channel_affine(x, None, bias, inner, channels)
    }

    fn launch_channel_affine(
        &self,
        x: &mut GpuTensor,
        scale: Option<&GpuTensor>,
        shift: &GpuTensor,
        inner: usize,
        channels: i32,
    ) -> Result<(), KernelError> {
        if x.is_empty() {
            return Ok(());
        }
        let (n, inner) = (x.len() as i64, inner as i64);
        let stream = self.stream();
        let (sp, tp) = (scale.map_or(0, |s| s.ptr(stream)), shift.ptr(stream));
        let xp = x.ptr_mut(stream);
        let name = kernel_name(CHANNEL_AFFINE, x.dtype());
        let f = self.function(&nvrtc::NORM, &name)?;
        let mut launch = stream.launch_builder(&f);
        launch
            .arg(&xp)
            .arg(&sp)
            .arg(&tp)
            .arg(&n)
            .arg(&inner)
            .arg(&channels);
        // SAFETY: x holds n values, scale (or null) and shift one per
        // channel, all of one dtype on this device.
        unsafe { launch.launch(launch_1d(x.len(), 256)) }.map_err(launch_error(&name))?;
        Ok(())
    }

    /// ONNX LayerNormalization as [`crate::cpu::layer_norm`]: each block
    /// over axes `axis..` normalised by its mean and population variance,
    /// then times `scale` plus `bias`, each holding a whole block.
    pub fn layer_norm(
        &self,
        x: &GpuTensor,
        axis: usize,
        scale: Option<&GpuTensor>,
        bias: Option<&GpuTensor>,
        epsilon: f32,
    ) -> Result<GpuTensor, KernelError> {
        const OP: &str = "LayerNormalization";
        let mut operands = vec![x];
        operands.extend(scale);
        operands.extend(bias);
        self.check_owner(OP, &operands)?;
        let dtype = check_dtypes(OP, &operands)?;
        check_axis(OP, "X", x.shape(), axis)?;
        let block: usize = x.shape()[axis..].iter().product();
        for (what, p) in [("scale", scale), ("bias", bias)] {
            if let Some(p) = p.filter(|p| p.len() != block) {
                return Err(shape_err(OP, what, p.shape(), format!("{block} values")));
            }
        }
        let mut y = self.alloc(x.shape().to_vec(), dtype)?;
        if x.is_empty() {
            return Ok(y);
        }
        let rows = (x.len() / block) as i64;
        let block = int(OP, "the normalised block", block)?;
        let stream = self.stream();
        let ptr = |p: Option<&GpuTensor>| p.map_or(0, |p| p.ptr(stream));
        let (xp, sp, bp) = (x.ptr(stream), ptr(scale), ptr(bias));
        let yp = y.ptr_mut(stream);
        let name = kernel_name(LAYER_NORM, dtype);
        let f = self.function(&nvrtc::NORM, &name)?;
        let mut launch = stream.launch_builder(&f);
        launch
            .arg(&xp)
            .arg(&yp)
            .arg(&sp)
            .arg(&bp)
            .arg(&rows)
            .arg(&block)
            .arg(&epsilon);
        // SAFETY: x and y hold rows·block values, scale and bias (or null)
        // block each, all of one dtype on this device.
        unsafe { launch.launch(launch_1d(rows as usize, ROWS_PER_BLOCK)) }
            .map_err(launch_error(&name))?;
        Ok(y)
    }
}
