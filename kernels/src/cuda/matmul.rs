//! ONNX MatMul on the device (`matmul.cu`): numpy's matmul over batches of
//! matrices, as [`crate::cpu::batched_matmul`].

use cudarc::driver::{DeviceRepr, LaunchConfig};

use super::strided::{pack, MAX_DIMS};
use super::{check_dtypes, dtype_suffix, int, nvrtc, Gpu, GpuTensor};
use crate::cpu::batched::{matmul_shapes, MatMulShapes};
use crate::cpu::strided::broadcast_strides;
use crate::error::KernelError;
use crate::tensor::StoredDType;

/// `MatMulParams` of matmul.cu, field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct MatMulParams {
    a: u64,
    b: u64,
    y: u64,
    batches: i64,
    m: i32,
    n: i32,
    k: i32,
    rank: i32,
    dims: [i64; MAX_DIMS],
    sa: [i64; MAX_DIMS],
    sb: [i64; MAX_DIMS],
}

// SAFETY: plain integers in the C layout the kernel declares.
unsafe impl DeviceRepr for MatMulParams {}
const _: () = assert!(std::mem::size_of::<MatMulParams>() == 240);

/// The block tile of both loops (`SIMT_BM`, `SIMT_BN`, `TC_BM`, `TC_BN` of
/// gemm_core.cuh) and their threads.
const TILE: usize = 128;
const THREADS: u32 = 256;
/// The grid's limit in y and z.
const GRID_YZ: usize = 65535;

/// Tensor cores take 16-bit operands only.
pub(crate) fn kernel_name(tensor_cores: bool, dtype: StoredDType) -> String {
    let path = if tensor_cores { "tc" } else { "simt" };
    format!("matmul_{path}_{}", dtype_suffix(dtype))
}

impl Gpu {
    /// `a · b` with numpy's matmul rules: the last two axes are the
    /// matrices, the axes before them broadcast; a 1-D `a` is a row and a
    /// 1-D `b` a column, that added axis dropped from the output. 16-bit
    /// operands use tensor cores where [`Gpu::uses_tensor_cores`].
    pub fn batched_matmul(&self, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor, KernelError> {
        const OP: &str = "MatMul";
        let MatMulShapes {
            a_batch,
            b_batch,
            m,
            k,
            n,
            batch,
            shape,
        } = matmul_shapes(a.shape(), b.shape())?;
        self.check_owner(OP, &[a, b])?;
        let dtype = check_dtypes(OP, &[a, b])?;
        let mut y = self.alloc(shape, dtype)?;
        if y.is_empty() {
            return Ok(y);
        }
        let count: usize = batch.iter().product();
        // Only a batched: its batch and rows are one tall matrix.
        let (batches, rows, packed) = if b_batch.iter().product::<usize>() == 1 && a_batch == batch
        {
            (1, count * m, pack::<2>(OP, &[], [&[], &[]])?)
        } else {
            let scaled = |shape: &[usize], size: usize| -> Vec<isize> {
                let s = broadcast_strides(shape, batch.len());
                s.iter().map(|v| v * size as isize).collect()
            };
            let (sa, sb) = (scaled(&a_batch, m * k), scaled(&b_batch, k * n));
            (count, m, pack(OP, &batch, [&sa, &sb])?)
        };
        let row_tiles = rows.div_ceil(TILE);
        if row_tiles > GRID_YZ {
            return Err(KernelError::Invalid {
                op: OP,
                what: format!("{rows} rows exceed the grid's {} row limit", GRID_YZ * TILE),
            });
        }
        let stream = self.stream();
        let [sa, sb] = packed.strides;
        let params = MatMulParams {
            a: a.ptr(stream),
            b: b.ptr(stream),
            y: y.ptr_mut(stream),
            batches: batches as i64,
            m: int(OP, "M", rows)?,
            n: int(OP, "N", n)?,
            k: int(OP, "K", k)?,
            rank: packed.rank,
            dims: packed.dims,
            sa,
            sb,
        };
        let cfg = LaunchConfig {
            grid_dim: (
                int(OP, "N tiles", n.div_ceil(TILE))? as u32,
                row_tiles as u32,
                batches.min(GRID_YZ) as u32,
            ),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let tensor_cores = dtype != StoredDType::F32 && self.uses_tensor_cores();
        let name = kernel_name(tensor_cores, dtype);
        // SAFETY: the parameters match the kernel's; the batch strides stay
        // inside a and b, and y holds batches·rows·n values.
        unsafe { self.launch_params(&nvrtc::MATMUL, &name, &params, cfg)? };
        Ok(y)
    }
}
