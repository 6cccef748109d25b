//! Pooling on the device (`pool.cu`).

use cudarc::driver::{DeviceRepr, PushKernelArg};

use super::{
    check_dtypes, dtype_suffix, int, launch_1d, launch_error, nvrtc, Gpu, GpuTensor, Pool2d,
    PoolKind,
};
use crate::error::{shape_err, KernelError};
use crate::tensor::StoredDType;

/// `PoolParams` of pool.cu, field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct PoolParams {
    x: u64,
    y: u64,
    planes: i64,
    h: i32,
    w: i32,
    oh: i32,
    ow: i32,
    kh: i32,
    kw: i32,
    sh: i32,
    sw: i32,
    dh: i32,
    dw: i32,
    pt: i32,
    pl: i32,
    pb: i32,
    pr: i32,
    average: i32,
    count_include_pad: i32,
}

// SAFETY: plain integers in the C layout the kernel declares.
unsafe impl DeviceRepr for PoolParams {}
const _: () = assert!(std::mem::size_of::<PoolParams>() == 88);

/// Planes per block of the global average pool: one warp each.
const PLANES_PER_BLOCK: usize = 8;

const POOL2D: &str = "pool2d";
const GLOBAL_AVERAGE_POOL: &str = "global_average_pool";

fn kernel_name(kernel: &str, dtype: StoredDType) -> String {
    format!("{kernel}_{}", dtype_suffix(dtype))
}

pub(crate) fn kernel_names(dtype: StoredDType) -> Vec<String> {
    [POOL2D, GLOBAL_AVERAGE_POOL]
        .iter()
        .map(|k| kernel_name(k, dtype))
        .collect()
}

impl Gpu {
    pub fn pool2d(&self, pool: &Pool2d, x: &GpuTensor) -> Result<GpuTensor, KernelError> {
        let mut y = self.alloc(pool.output_shape(x.shape())?, x.dtype())?;
        self.pool2d_into(pool, x, &mut y)?;
        Ok(y)
    }

    /// Writes every element of `y` (`[N, C, OH, OW]`).
    pub fn pool2d_into(
        &self,
        pool: &Pool2d,
        x: &GpuTensor,
        y: &mut GpuTensor,
    ) -> Result<(), KernelError> {
        let out = pool.output_shape(x.shape())?;
        self.check_owner("Pool", &[x, y])?;
        let dtype = check_dtypes("Pool", &[x, y])?;
        if y.shape() != out.as_slice() {
            return Err(shape_err("Pool", "output", y.shape(), format!("{out:?}")));
        }
        if y.is_empty() {
            return Ok(());
        }
        let [n, c, h, w] = x.shape()[..] else {
            unreachable!()
        };
        let [_, _, oh, ow] = out[..] else {
            unreachable!()
        };
        let i = |what, v| int("Pool", what, v);
        i("input plane size", h * w)?;
        let stream = self.stream();
        let p = PoolParams {
            x: x.ptr(stream),
            y: y.ptr_mut(stream),
            planes: (n * c) as i64,
            h: i("H", h)?,
            w: i("W", w)?,
            oh: i("OH", oh)?,
            ow: i("OW", ow)?,
            kh: i("kernel", pool.kernel[0])?,
            kw: i("kernel", pool.kernel[1])?,
            sh: i("stride", pool.strides[0])?,
            sw: i("stride", pool.strides[1])?,
            dh: i("dilation", pool.dilations[0])?,
            dw: i("dilation", pool.dilations[1])?,
            pt: i("pad", pool.pads[0])?,
            pl: i("pad", pool.pads[1])?,
            pb: i("pad", pool.pads[2])?,
            pr: i("pad", pool.pads[3])?,
            average: (pool.kind == PoolKind::Average) as i32,
            count_include_pad: pool.count_include_pad as i32,
        };
        let name = kernel_name(POOL2D, dtype);
        let f = self.function(&nvrtc::POOL, &name)?;
        let mut launch = stream.launch_builder(&f);
        launch.arg(&p);
        // SAFETY: the parameters match the kernel's and describe live
        // buffers of this device.
        unsafe { launch.launch(launch_1d(y.len(), 256)) }.map_err(launch_error(&name))?;
        Ok(())
    }

    /// Mean over H and W: `[N, C, H, W]` → `[N, C, 1, 1]`.
    pub fn global_average_pool(&self, x: &GpuTensor) -> Result<GpuTensor, KernelError> {
        let [n, c, _, _] = x.shape()[..] else {
            return Err(shape_err(
                "GlobalAveragePool",
                "input",
                x.shape(),
                "[N, C, H, W]",
            ));
        };
        let mut y = self.alloc(vec![n, c, 1, 1], x.dtype())?;
        self.global_average_pool_into(x, &mut y)?;
        Ok(y)
    }

    /// Writes every element of `y` (`[N, C, 1, 1]`).
    pub fn global_average_pool_into(
        &self,
        x: &GpuTensor,
        y: &mut GpuTensor,
    ) -> Result<(), KernelError> {
        let [n, c, h, w] = x.shape()[..] else {
            return Err(shape_err(
                "GlobalAveragePool",
                "input",
                x.shape(),
                "[N, C, H, W]",
            ));
        };
        self.check_owner("GlobalAveragePool", &[x, y])?;
        let dtype = check_dtypes("GlobalAveragePool", &[x, y])?;
        if y.shape() != [n, c, 1, 1] {
            return Err(shape_err(
                "GlobalAveragePool",
                "output",
                y.shape(),
                format!("[{n}, {c}, 1, 1]"),
            ));
        }
        let planes = n * c;
        if planes == 0 {
            return Ok(());
        }
        let hw = int("GlobalAveragePool", "H*W", h * w)?;
        let stream = self.stream();
        let (xp, yp) = (x.ptr(stream), y.ptr_mut(stream));
        let planes = planes as i64;
        let name = kernel_name(GLOBAL_AVERAGE_POOL, dtype);
        let f = self.function(&nvrtc::POOL, &name)?;
        let mut launch = stream.launch_builder(&f);
        launch.arg(&xp).arg(&yp).arg(&planes).arg(&hw);
        // SAFETY: the arguments match the kernel's: x holds planes*hw values
        // and y holds planes.
        unsafe { launch.launch(launch_1d(planes as usize, PLANES_PER_BLOCK)) }
            .map_err(launch_error(&name))?;
        Ok(())
    }
}
