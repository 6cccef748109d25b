//! Element-wise binary ops with numpy broadcasting on the device
//! (`broadcast.cu`).

use cudarc::driver::DeviceRepr;

use super::strided::{pack, MAX_DIMS};
use super::{check_dtypes, dtype_suffix, launch_1d, nvrtc, Gpu, GpuTensor};
use crate::cpu::broadcast::broadcast_shape_for;
use crate::cpu::strided::{broadcast_strides, contiguous_strides};
use crate::cpu::Binary;
use crate::error::{shape_err, KernelError};
use crate::tensor::StoredDType;

/// `BinaryParams` of broadcast.cu, field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct BinaryParams {
    a: u64,
    b: u64,
    y: u64,
    n: i64,
    op: i32,
    rank: i32,
    dims: [i64; MAX_DIMS],
    sa: [i64; MAX_DIMS],
    sb: [i64; MAX_DIMS],
}

// SAFETY: plain integers in the C layout the kernel declares.
unsafe impl DeviceRepr for BinaryParams {}
const _: () = assert!(std::mem::size_of::<BinaryParams>() == 232);

const BINARY: &str = "binary";

pub(crate) fn kernel_name(dtype: StoredDType) -> String {
    format!("{BINARY}_{}", dtype_suffix(dtype))
}

/// The `BINARY_*` code of broadcast.cu.
fn code(op: Binary) -> i32 {
    match op {
        Binary::Add => 0,
        Binary::Sub => 1,
        Binary::Mul => 2,
        Binary::Div => 3,
        Binary::Pow => 4,
        Binary::Max => 5,
        Binary::Min => 6,
    }
}

/// Device addresses of the operands of one launch.
struct Operands {
    a: u64,
    b: u64,
    y: u64,
}

impl Gpu {
    /// `op(a, b)` broadcast to [`crate::cpu::broadcast_shape`] of the two,
    /// with [`crate::cpu::binary`]'s rules (NaN wins Max and Min).
    pub fn binary(
        &self,
        op: Binary,
        a: &GpuTensor,
        b: &GpuTensor,
    ) -> Result<GpuTensor, KernelError> {
        let name = op.name();
        self.check_owner(name, &[a, b])?;
        let dtype = check_dtypes(name, &[a, b])?;
        let shape = broadcast_shape_for(name, a.shape(), b.shape())?;
        let mut y = self.alloc(shape, dtype)?;
        let stream = self.stream();
        let ptrs = Operands {
            a: a.ptr(stream),
            b: b.ptr(stream),
            y: y.ptr_mut(stream),
        };
        self.launch_binary(op, dtype, y.shape(), a.shape(), b.shape(), ptrs)?;
        Ok(y)
    }

    /// `a = op(a, b)` where `b` broadcasts to `a`'s shape.
    pub fn binary_in_place(
        &self,
        op: Binary,
        a: &mut GpuTensor,
        b: &GpuTensor,
    ) -> Result<(), KernelError> {
        let name = op.name();
        self.check_owner(name, &[&*a, b])?;
        let dtype = check_dtypes(name, &[&*a, b])?;
        if broadcast_shape_for(name, a.shape(), b.shape())? != a.shape() {
            return Err(shape_err(
                name,
                "B",
                b.shape(),
                format!("broadcastable to A's shape {:?}", a.shape()),
            ));
        }
        let stream = self.stream();
        let y = a.ptr_mut(stream);
        let ptrs = Operands {
            a: y,
            b: b.ptr(stream),
            y,
        };
        let shape = a.shape().to_vec();
        self.launch_binary(op, dtype, &shape, &shape, b.shape(), ptrs)
    }

    fn launch_binary(
        &self,
        op: Binary,
        dtype: StoredDType,
        shape: &[usize],
        a_shape: &[usize],
        b_shape: &[usize],
        ptrs: Operands,
    ) -> Result<(), KernelError> {
        let n: usize = shape.iter().product();
        if n == 0 {
            return Ok(());
        }
        let so = contiguous_strides(shape);
        let sa = broadcast_strides(a_shape, shape.len());
        let sb = broadcast_strides(b_shape, shape.len());
        // The output's strides take part in collapsing so that merged axes
        // still walk it in order.
        let packed = pack(op.name(), shape, [&so, &sa, &sb])?;
        let [_, sa, sb] = packed.strides;
        let params = BinaryParams {
            a: ptrs.a,
            b: ptrs.b,
            y: ptrs.y,
            n: n as i64,
            op: code(op),
            rank: packed.rank,
            dims: packed.dims,
            sa,
            sb,
        };
        let name = kernel_name(dtype);
        // SAFETY: the parameters match the kernel's; a and b hold their
        // shapes' values, which the strides never leave, and y holds n.
        unsafe { self.launch_params(&nvrtc::BROADCAST, &name, &params, launch_1d(n, 256)) }
    }
}
