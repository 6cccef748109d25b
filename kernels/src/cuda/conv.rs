//! 2-D convolution on the device (`conv.cu`).

use cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};

use super::gemm::{THREADS, TILE};
use super::tensor::dtype_size;
use super::{
    check_dtypes, dtype_suffix, int, launch_1d, launch_error, nvrtc, Conv2d, Gpu, GpuTensor,
};
use crate::cpu::ConvDims as Dims;
use crate::error::{shape_err, KernelError};
use crate::tensor::StoredDType;

/// `ConvParams` of conv.cu, field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct ConvParams {
    x: u64,
    weight: u64,
    bias: u64,
    y: u64,
    n: i32,
    c: i32,
    h: i32,
    w: i32,
    m: i32,
    cg: i32,
    mg: i32,
    kh: i32,
    kw: i32,
    sh: i32,
    sw: i32,
    dh: i32,
    dw: i32,
    pt: i32,
    pl: i32,
    oh: i32,
    ow: i32,
    relu: i32,
    group0: i32,
    unused: i32,
}

// SAFETY: plain integers in the C layout the kernel declares.
unsafe impl DeviceRepr for ConvParams {}
const _: () = assert!(std::mem::size_of::<ConvParams>() == 112);

/// With fewer output channels per group than this (depthwise layers, say),
/// one thread per output beats a GEMM whose 128-row tiles would be mostly
/// empty.
const DIRECT_BELOW_CHANNELS: usize = 16;

/// The grid's z dimension (one group per z) is at most this.
const MAX_GROUPS_PER_LAUNCH: usize = 65535;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Path {
    Direct,
    GemmSimt,
    GemmTensorCores,
}

pub(crate) const PATHS: [Path; 3] = [Path::Direct, Path::GemmSimt, Path::GemmTensorCores];

impl Path {
    pub(crate) fn exists_for(self, dtype: StoredDType) -> bool {
        self != Path::GemmTensorCores || dtype != StoredDType::F32
    }
}

pub(crate) fn kernel_name(path: Path, dtype: StoredDType) -> String {
    let path = match path {
        Path::Direct => "direct",
        Path::GemmSimt => "gemm_simt",
        Path::GemmTensorCores => "gemm_tc",
    };
    format!("conv_{path}_{}", dtype_suffix(dtype))
}

impl Gpu {
    pub fn conv2d(
        &self,
        conv: &Conv2d,
        x: &GpuTensor,
        w: &GpuTensor,
        bias: Option<&GpuTensor>,
    ) -> Result<GpuTensor, KernelError> {
        let mut y = self.alloc(conv.output_shape(x.shape(), w.shape())?, x.dtype())?;
        self.conv2d_into(conv, x, w, bias, &mut y)?;
        Ok(y)
    }

    /// Writes every element of `y` (`[N, M, OH, OW]`).
    pub fn conv2d_into(
        &self,
        conv: &Conv2d,
        x: &GpuTensor,
        w: &GpuTensor,
        bias: Option<&GpuTensor>,
        y: &mut GpuTensor,
    ) -> Result<(), KernelError> {
        let (dtype, dims) = self.check_conv(conv, x, w, bias, y)?;
        if y.is_empty() {
            return Ok(());
        }
        let mut p = self.conv_params(conv, &dims, x, w, bias, y)?;
        if dims.m / conv.groups < DIRECT_BELOW_CHANNELS {
            p.n = int("Conv", "N", dims.n)?;
            return self.launch_direct(&p, dtype, y.len());
        }
        self.launch_gemm(p, dtype, &dims, conv.groups)
    }

    /// Checks that the operands live here, share a dtype, and that `y` and
    /// `bias` have the shapes the convolution gives.
    fn check_conv(
        &self,
        conv: &Conv2d,
        x: &GpuTensor,
        w: &GpuTensor,
        bias: Option<&GpuTensor>,
        y: &GpuTensor,
    ) -> Result<(StoredDType, Dims), KernelError> {
        let dims = conv.dims(x.shape(), w.shape())?;
        let mut operands = vec![x, w];
        operands.extend(bias);
        operands.push(y);
        self.check_owner("Conv", &operands)?;
        let dtype = check_dtypes("Conv", &operands)?;
        let out = [dims.n, dims.m, dims.oh, dims.ow];
        if y.shape() != out.as_slice() {
            return Err(shape_err("Conv", "output", y.shape(), format!("{out:?}")));
        }
        if let Some(b) = bias {
            if b.shape() != [dims.m] {
                return Err(shape_err(
                    "Conv",
                    "bias",
                    b.shape(),
                    format!("[{}]", dims.m),
                ));
            }
        }
        Ok((dtype, dims))
    }

    /// The kernels' parameters for all images and groups at once; `n` is
    /// left 0 for the launches to set.
    fn conv_params(
        &self,
        conv: &Conv2d,
        d: &Dims,
        x: &GpuTensor,
        w: &GpuTensor,
        bias: Option<&GpuTensor>,
        y: &mut GpuTensor,
    ) -> Result<ConvParams, KernelError> {
        let i = |what, v| int("Conv", what, v);
        // Offsets inside one image are 32-bit in the kernels.
        i("input image size", d.c * d.h * d.w)?;
        i("output image size", d.m * (d.oh * d.ow))?;
        i("weight size", d.m * d.cg * d.kh * d.kw)?;
        let stream = self.stream();
        Ok(ConvParams {
            x: x.ptr(stream),
            weight: w.ptr(stream),
            bias: bias.map_or(0, |b| b.ptr(stream)),
            y: y.ptr_mut(stream),
            n: 0,
            c: i("C", d.c)?,
            h: i("H", d.h)?,
            w: i("W", d.w)?,
            m: i("M", d.m)?,
            cg: i("C/groups", d.cg)?,
            mg: i("M/groups", d.m / conv.groups)?,
            kh: i("kH", d.kh)?,
            kw: i("kW", d.kw)?,
            sh: i("stride", conv.strides[0])?,
            sw: i("stride", conv.strides[1])?,
            dh: i("dilation", conv.dilations[0])?,
            dw: i("dilation", conv.dilations[1])?,
            pt: i("pad", conv.pads[0])?,
            pl: i("pad", conv.pads[1])?,
            oh: i("OH", d.oh)?,
            ow: i("OW", d.ow)?,
            relu: conv.relu as i32,
            group0: 0,
            unused: 0,
        })
    }

    /// One thread per output element, all images and groups in one launch.
    fn launch_direct(
        &self,
        p: &ConvParams,
        dtype: StoredDType,
        outputs: usize,
    ) -> Result<(), KernelError> {
        let name = kernel_name(Path::Direct, dtype);
        let f = self.function(&nvrtc::CONV, &name)?;
        let mut launch = self.stream().launch_builder(&f);
        launch.arg(p);
        // SAFETY: the parameters match the kernel's and describe live
        // buffers of this device.
        unsafe { launch.launch(launch_1d(outputs, 256)) }.map_err(launch_error(&name))?;
        Ok(())
    }

    /// An implicit GEMM per group, on tensor cores where the dtype and the
    /// device allow, in as many launches as the grid's limits need.
    fn launch_gemm(
        &self,
        mut p: ConvParams,
        dtype: StoredDType,
        d: &Dims,
        groups: usize,
    ) -> Result<(), KernelError> {
        let path = if dtype != StoredDType::F32 && self.uses_tensor_cores() {
            Path::GemmTensorCores
        } else {
            Path::GemmSimt
        };
        let mg = d.m / groups;
        let tiles_m = mg.div_ceil(TILE);
        if tiles_m > 65535 {
            return Err(KernelError::Invalid {
                op: "Conv",
                what: format!(
                    "{mg} output channels per group exceed the grid's {} limit",
                    65535 * TILE
                ),
            });
        }
        let name = kernel_name(path, dtype);
        let f = self.function(&nvrtc::CONV, &name)?;
        let stream = self.stream();
        let (n, ohw) = (d.n, d.oh * d.ow);
        // Images are folded into the GEMM's N dimension, a 32-bit index:
        // batches larger than that are split.
        let images_per_launch = ((i32::MAX as usize - TILE) / ohw).clamp(1, n);
        let elem = dtype_size(dtype) as u64;
        let (x0, y0) = (p.x, p.y);
        for first in (0..n).step_by(images_per_launch) {
            let images = images_per_launch.min(n - first);
            p.n = images as i32;
            p.x = x0 + (first * d.c * d.h * d.w) as u64 * elem;
            p.y = y0 + (first * d.m * ohw) as u64 * elem;
            for group0 in (0..groups).step_by(MAX_GROUPS_PER_LAUNCH) {
                let launch_groups = MAX_GROUPS_PER_LAUNCH.min(groups - group0);
                p.group0 = group0 as i32;
                let cfg = LaunchConfig {
                    grid_dim: (
                        (images * ohw).div_ceil(TILE) as u32,
                        tiles_m as u32,
                        launch_groups as u32,
                    ),
                    block_dim: (THREADS, 1, 1),
                    shared_mem_bytes: 0,
                };
                let mut launch = stream.launch_builder(&f);
                launch.arg(&p);
                // SAFETY: the parameters match the kernel's and describe
                // live buffers of this device; the image offsets stay inside
                // x and y.
                unsafe { launch.launch(cfg) }.map_err(launch_error(&name))?;
            }
        }
        Ok(())
    }
}
