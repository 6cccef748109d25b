//! ONNX Reduce* over any set of axes on the device (`reduce.cu`).

use cudarc::driver::DeviceRepr;

use super::strided::{pack, MAX_DIMS};
use super::{dtype_suffix, launch_1d, nvrtc, Gpu, GpuTensor};
use crate::cpu::reduce::output_shape;
use crate::cpu::strided::contiguous_strides;
use crate::cpu::Reduce;
use crate::error::KernelError;
use crate::tensor::StoredDType;

/// `ReduceParams` of reduce.cu, field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct ReduceParams {
    x: u64,
    y: u64,
    outputs: i64,
    count: i64,
    op: i32,
    kept_rank: i32,
    reduced_rank: i32,
    lanes: i32,
    kept_dims: [i64; MAX_DIMS],
    kept_strides: [i64; MAX_DIMS],
    reduced_dims: [i64; MAX_DIMS],
    reduced_strides: [i64; MAX_DIMS],
}

// SAFETY: plain integers in the C layout the kernel declares.
unsafe impl DeviceRepr for ReduceParams {}
const _: () = assert!(std::mem::size_of::<ReduceParams>() == 304);

/// `REDUCE_THREADS` of reduce.cu: the block size, and the largest group.
const THREADS: usize = 256;

const REDUCE: &str = "reduce";

pub(crate) fn kernel_name(dtype: StoredDType) -> String {
    format!("{REDUCE}_{}", dtype_suffix(dtype))
}

/// The `REDUCE_*` code of reduce.cu.
fn code(op: Reduce) -> i32 {
    match op {
        Reduce::Mean => 0,
        Reduce::Sum => 1,
        Reduce::Max => 2,
        Reduce::Min => 3,
        Reduce::Prod => 4,
        Reduce::L2 => 5,
        Reduce::SumSquare => 6,
    }
}

/// Threads that share one output. A thread each, unless the reductions are
/// long: then a warp, whose lanes read neighbouring values when the reduced
/// axes end contiguous (or there are too few outputs to keep the device busy
/// otherwise), or a block when a few outputs each reduce very many values.
fn lanes(outputs: usize, count: usize, reduced_contiguous: bool) -> usize {
    if count >= 4096 && outputs <= 512 {
        THREADS
    } else if count >= 32 && (reduced_contiguous || outputs <= 4096) {
        32
    } else {
        1
    }
}

impl Gpu {
    /// Reduces `x` over `axes` (empty: every axis) as [`crate::cpu::reduce`]
    /// does: reduced axes kept as 1 with `keepdims`, else dropped; Max and
    /// Min propagate NaN; an empty reduction gives the op's identity.
    pub fn reduce(
        &self,
        op: Reduce,
        x: &GpuTensor,
        axes: &[usize],
        keepdims: bool,
    ) -> Result<GpuTensor, KernelError> {
        let name = op.name();
        self.check_owner(name, &[x])?;
        let reduced = op.reduced_axes(x.shape(), axes)?;
        let mut y = self.alloc(output_shape(x.shape(), &reduced, keepdims), x.dtype())?;
        let outputs = y.len();
        if outputs == 0 {
            return Ok(y);
        }
        let sx = contiguous_strides(x.shape());
        let axes_where = |r: bool| -> (Vec<usize>, Vec<isize>) {
            (0..x.shape().len())
                .filter(|&i| reduced[i] == r)
                .map(|i| (x.shape()[i], sx[i]))
                .unzip()
        };
        let (kept_dims, kept_strides) = axes_where(false);
        let (reduced_dims, reduced_strides) = axes_where(true);
        let count: usize = reduced_dims.iter().product();
        let kept = pack(name, &kept_dims, [&kept_strides])?;
        let red = pack(name, &reduced_dims, [&reduced_strides])?;
        let contiguous = red.rank > 0 && red.strides[0][red.rank as usize - 1] == 1;
        let lanes = lanes(outputs, count, contiguous);
        let stream = self.stream();
        let params = ReduceParams {
            x: x.ptr(stream),
            y: y.ptr_mut(stream),
            outputs: outputs as i64,
            count: count as i64,
            op: code(op),
            kept_rank: kept.rank,
            reduced_rank: red.rank,
            lanes: lanes as i32,
            kept_dims: kept.dims,
            kept_strides: kept.strides[0],
            reduced_dims: red.dims,
            reduced_strides: red.strides[0],
        };
        let kernel = kernel_name(x.dtype());
        let cfg = launch_1d(outputs, THREADS / lanes);
        // SAFETY: the parameters match the kernel's; the kept and reduced
        // strides together reach exactly x's elements, and y holds outputs.
        unsafe { self.launch_params(&nvrtc::REDUCE, &kernel, &params, cfg)? };
        Ok(y)
    }
}
