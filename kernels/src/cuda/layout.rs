//! Data movement on the device (`layout.cu`): Transpose, Slice, Concat,
//! Split, Gather and Expand, with the shapes and checks of
//! [`crate::cpu`]'s.

use cudarc::driver::{DeviceRepr, PushKernelArg};

use super::strided::{pack, MAX_DIMS};
use super::tensor::dtype_size;
use super::{check_dtypes, driver_error, launch_1d, launch_error, nvrtc, Gpu, GpuTensor};
use crate::cpu::broadcast::broadcast_shape_for;
use crate::cpu::layout::{check_split, concat_shape, gather_shape, slice_view, transpose_view};
use crate::cpu::strided::{broadcast_strides, contiguous_strides};
use crate::error::KernelError;
use crate::tensor::StoredDType;

/// `CopyParams` of layout.cu, field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct CopyParams {
    x: u64,
    y: u64,
    n: i64,
    x_base: i64,
    y_base: i64,
    rank: i32,
    pad: i32,
    dims: [i64; MAX_DIMS],
    sx: [i64; MAX_DIMS],
    sy: [i64; MAX_DIMS],
}

// SAFETY: plain integers in the C layout the kernel declares.
unsafe impl DeviceRepr for CopyParams {}
const _: () = assert!(std::mem::size_of::<CopyParams>() == 240);

/// Values move as bits: one kernel per element size.
fn bits(dtype: StoredDType) -> usize {
    dtype_size(dtype) * 8
}

pub(crate) fn kernel_names() -> Vec<String> {
    [16, 32]
        .iter()
        .flat_map(|b| [format!("copy_strided_b{b}"), format!("gather_b{b}")])
        .collect()
}

/// One strided copy: element `i` of the index space `dims` goes from `x` at
/// `x_base + Σ idx·sx` to `y` at `y_base + Σ idx·sy`.
struct Copy<'a> {
    dims: &'a [usize],
    sx: &'a [isize],
    sy: &'a [isize],
    x_base: isize,
    y_base: isize,
}

impl Gpu {
    /// ONNX Transpose: output axis `i` is input axis `perm[i]`.
    pub fn transpose(&self, x: &GpuTensor, perm: &[usize]) -> Result<GpuTensor, KernelError> {
        self.check_owner("Transpose", &[x])?;
        let (shape, sx) = transpose_view(x.shape(), perm)?;
        self.read_through("Transpose", x, shape, &sx, 0)
    }

    /// ONNX Slice on resolved indices, as [`crate::cpu::slice`]: one
    /// `(start, end, step)` per axis, negative steps walking backwards.
    pub fn slice(
        &self,
        x: &GpuTensor,
        starts: &[i64],
        ends: &[i64],
        steps: &[i64],
    ) -> Result<GpuTensor, KernelError> {
        self.check_owner("Slice", &[x])?;
        let (shape, sx, base) = slice_view(x.shape(), starts, ends, steps)?;
        self.read_through("Slice", x, shape, &sx, base)
    }

    /// ONNX Expand: `x` broadcast to `broadcast_shape(x.shape, shape)`.
    pub fn expand(&self, x: &GpuTensor, shape: &[usize]) -> Result<GpuTensor, KernelError> {
        self.check_owner("Expand", &[x])?;
        let shape = broadcast_shape_for("Expand", x.shape(), shape)?;
        let sx = broadcast_strides(x.shape(), shape.len());
        self.read_through("Expand", x, shape, &sx, 0)
    }

    /// ONNX Concat: the inputs joined along `axis`, all other extents equal.
    pub fn concat(&self, inputs: &[&GpuTensor], axis: usize) -> Result<GpuTensor, KernelError> {
        const OP: &str = "Concat";
        let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape()).collect();
        let shape = concat_shape(&shapes, axis)?;
        self.check_owner(OP, inputs)?;
        let dtype = check_dtypes(OP, inputs)?;
        let outer: usize = shape[..axis].iter().product();
        let inner: usize = shape[axis + 1..].iter().product();
        let row = (shape[axis] * inner) as isize;
        let mut y = self.alloc(shape, dtype)?;
        let mut first = 0;
        // Each input is written into its place: [outer, its rows] of y.
        for t in inputs {
            let run = t.shape()[axis] * inner;
            let copy = Copy {
                dims: &[outer, run],
                sx: &[run as isize, 1],
                sy: &[row, 1],
                x_base: 0,
                y_base: first as isize,
            };
            self.copy_strided(OP, t, &mut y, copy)?;
            first += run;
        }
        Ok(y)
    }

    /// ONNX Split: `x` cut along `axis` into parts of `sizes` (summing to
    /// the axis' extent).
    pub fn split(
        &self,
        x: &GpuTensor,
        axis: usize,
        sizes: &[usize],
    ) -> Result<Vec<GpuTensor>, KernelError> {
        const OP: &str = "Split";
        self.check_owner(OP, &[x])?;
        check_split(x.shape(), axis, sizes)?;
        let outer: usize = x.shape()[..axis].iter().product();
        let inner: usize = x.shape()[axis + 1..].iter().product();
        let row = (x.shape()[axis] * inner) as isize;
        let mut first = 0;
        let mut parts = Vec::with_capacity(sizes.len());
        for &size in sizes {
            let mut shape = x.shape().to_vec();
            shape[axis] = size;
            let mut y = self.alloc(shape, x.dtype())?;
            let run = size * inner;
            let copy = Copy {
                dims: &[outer, run],
                sx: &[row, 1],
                sy: &[run as isize, 1],
                x_base: first as isize,
                y_base: 0,
            };
            self.copy_strided(OP, x, &mut y, copy)?;
            first += run;
            parts.push(y);
        }
        Ok(parts)
    }

    /// ONNX Gather with the indices on the host, as [`crate::cpu::gather`]:
    /// output `[x.shape[..axis], indices_shape, x.shape[axis+1..]]`.
    pub fn gather(
        &self,
        x: &GpuTensor,
        axis: usize,
        indices: &[usize],
        indices_shape: &[usize],
    ) -> Result<GpuTensor, KernelError> {
        self.check_owner("Gather", &[x])?;
        let shape = gather_shape(x.shape(), axis, indices, indices_shape)?;
        let mut y = self.alloc(shape, x.dtype())?;
        if y.is_empty() {
            return Ok(y);
        }
        let outer = x.shape()[..axis].iter().product::<usize>() as i64;
        let dim = x.shape()[axis] as i64;
        let inner = x.shape()[axis + 1..].iter().product::<usize>() as i64;
        let picks = indices.len() as i64;
        let stream = self.stream();
        let wide: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
        let on_device = stream.clone_htod(&wide).map_err(driver_error(format!(
            "uploading {} gather indices",
            wide.len()
        )))?;
        let (xp, yp) = (x.ptr(stream), y.ptr_mut(stream));
        let name = format!("gather_b{}", bits(x.dtype()));
        let f = self.function(&nvrtc::LAYOUT, &name)?;
        let mut launch = stream.launch_builder(&f);
        launch
            .arg(&xp)
            .arg(&yp)
            .arg(&on_device)
            .arg(&outer)
            .arg(&dim)
            .arg(&picks)
            .arg(&inner);
        // SAFETY: x is [outer, dim, inner], y [outer, picks, inner], and
        // every index was checked to be below dim.
        unsafe { launch.launch(launch_1d(y.len(), 256)) }.map_err(launch_error(&name))?;
        Ok(y)
    }

    /// A new dense tensor of `shape` whose element `idx` is `x` at
    /// `x_base + Σ idx·sx`: a view of `x` written out.
    fn read_through(
        &self,
        op: &'static str,
        x: &GpuTensor,
        shape: Vec<usize>,
        sx: &[isize],
        x_base: isize,
    ) -> Result<GpuTensor, KernelError> {
        let sy = contiguous_strides(&shape);
        let mut y = self.alloc(shape.clone(), x.dtype())?;
        let copy = Copy {
            dims: &shape,
            sx,
            sy: &sy,
            x_base,
            y_base: 0,
        };
        self.copy_strided(op, x, &mut y, copy)?;
        Ok(y)
    }

    fn copy_strided(
        &self,
        op: &'static str,
        x: &GpuTensor,
        y: &mut GpuTensor,
        copy: Copy<'_>,
    ) -> Result<(), KernelError> {
        let n: usize = copy.dims.iter().product();
        if n == 0 {
            return Ok(());
        }
        let packed = pack(op, copy.dims, [copy.sx, copy.sy])?;
        let [sx, sy] = packed.strides;
        let stream = self.stream();
        let params = CopyParams {
            x: x.ptr(stream),
            y: y.ptr_mut(stream),
            n: n as i64,
            x_base: copy.x_base as i64,
            y_base: copy.y_base as i64,
            rank: packed.rank,
            pad: 0,
            dims: packed.dims,
            sx,
            sy,
        };
        let name = format!("copy_strided_b{}", bits(x.dtype()));
        // SAFETY: the parameters match the kernel's, and the callers' views
        // stay inside x and y.
        unsafe { self.launch_params(&nvrtc::LAYOUT, &name, &params, launch_1d(n, 256)) }
    }
}
