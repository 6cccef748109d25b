//! ONNX Gemm on the device (`gemm.cu`).

use cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};

use super::{check_dtypes, dtype_suffix, int, launch_error, nvrtc, Gemm, Gpu, GpuTensor};
use crate::error::{shape_err, KernelError};
use crate::tensor::StoredDType;

/// `GemmParams` of gemm.cu, field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct GemmParams {
    a: u64,
    b: u64,
    y: u64,
    c: u64,
    lda: i64,
    ldb: i64,
    ldy: i64,
    c_rs: i64,
    c_cs: i64,
    m: i32,
    n: i32,
    k: i32,
    relu: i32,
    trans_a: i32,
    trans_b: i32,
    alpha: f32,
    beta: f32,
}

// SAFETY: plain integers and floats in the C layout the kernel declares.
unsafe impl DeviceRepr for GemmParams {}
const _: () = assert!(std::mem::size_of::<GemmParams>() == 104);

/// Both GEMM kernels cover a 128x128 tile of the output per block.
pub(crate) const TILE: usize = 128;
pub(crate) const THREADS: u32 = 256;

/// One kernel per storage type and strategy; transposes are parameters.
pub(crate) fn kernel_name(tensor_cores: bool, dtype: StoredDType) -> String {
    let strategy = if tensor_cores { "tc" } else { "simt" };
    format!("gemm_{strategy}_{}", dtype_suffix(dtype))
}

/// Row and column strides reading `c` broadcast to `m x n` (numpy rules,
/// right-aligned), as the CPU Gemm reads it.
fn broadcast_strides(c: &[usize], m: usize, n: usize) -> Result<(i64, i64), KernelError> {
    let (cr, cc) = match c {
        [] => (1, 1),
        [x] => (1, *x),
        [r, x] => (*r, *x),
        _ => (0, 0),
    };
    if !(cr == 1 || cr == m) || !(cc == 1 || cc == n) {
        return Err(shape_err(
            "Gemm",
            "C",
            c,
            format!("broadcastable to [{m}, {n}]"),
        ));
    }
    let rs = if cr == 1 { 0 } else { cc as i64 };
    let cs = if cc == 1 { 0 } else { 1 };
    Ok((rs, cs))
}

impl Gpu {
    pub fn gemm(
        &self,
        gemm: &Gemm,
        a: &GpuTensor,
        b: &GpuTensor,
        c: Option<&GpuTensor>,
    ) -> Result<GpuTensor, KernelError> {
        let (m, _, n) = gemm.dims(a.shape(), b.shape())?;
        let mut y = self.alloc(vec![m, n], a.dtype())?;
        self.gemm_into(gemm, a, b, c, &mut y)?;
        Ok(y)
    }

    /// Writes every element of `y` (`[M, N]`).
    pub fn gemm_into(
        &self,
        gemm: &Gemm,
        a: &GpuTensor,
        b: &GpuTensor,
        c: Option<&GpuTensor>,
        y: &mut GpuTensor,
    ) -> Result<(), KernelError> {
        let (m, k, n) = gemm.dims(a.shape(), b.shape())?;
        // As on the CPU, C is not read at all when beta is 0.
        let c = c.filter(|_| gemm.beta != 0.0);
        let mut operands = vec![a, b];
        operands.extend(c);
        operands.push(&*y);
        self.check_owner("Gemm", &operands)?;
        let dtype = check_dtypes("Gemm", &operands)?;
        if y.shape() != [m, n] {
            return Err(shape_err(
                "Gemm",
                "output",
                y.shape(),
                format!("[{m}, {n}]"),
            ));
        }
        let (c_rs, c_cs) = match c {
            Some(c) => broadcast_strides(c.shape(), m, n)?,
            None => (0, 0),
        };
        if m == 0 || n == 0 {
            return Ok(());
        }
        let blocks_m = m.div_ceil(TILE);
        if blocks_m > 65535 {
            return Err(KernelError::Invalid {
                op: "Gemm",
                what: format!("{m} rows exceed the grid's {} row limit", 65535 * TILE),
            });
        }
        let stream = self.stream();
        let params = GemmParams {
            a: a.ptr(stream),
            b: b.ptr(stream),
            y: y.ptr_mut(stream),
            c: c.map_or(0, |c| c.ptr(stream)),
            lda: if gemm.trans_a { m } else { k } as i64,
            ldb: if gemm.trans_b { k } else { n } as i64,
            ldy: n as i64,
            c_rs,
            c_cs,
            m: int("Gemm", "M", m)?,
            n: int("Gemm", "N", n)?,
            k: int("Gemm", "K", k)?,
            relu: gemm.relu as i32,
            trans_a: gemm.trans_a as i32,
            trans_b: gemm.trans_b as i32,
            alpha: gemm.alpha,
            beta: gemm.beta,
        };
        let tensor_cores = dtype != StoredDType::F32 && self.uses_tensor_cores();
        let name = kernel_name(tensor_cores, dtype);
        let f = self.function(&nvrtc::GEMM, &name)?;
        let cfg = LaunchConfig {
            grid_dim: (
                int("Gemm", "N tiles", n.div_ceil(TILE))? as u32,
                blocks_m as u32,
                1,
            ),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut launch = stream.launch_builder(&f);
        launch.arg(&params);
        // SAFETY: the parameters match the kernel's; every pointer is a live
        // buffer of this device holding the extents described.
        unsafe { launch.launch(cfg) }.map_err(launch_error(&name))?;
        Ok(())
    }
}
