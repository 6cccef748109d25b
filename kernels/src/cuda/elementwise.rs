//! ReLU, elementwise add, softmax, flatten and storage-type casts on the device
//! (`elementwise.cu`).

use cudarc::driver::PushKernelArg;

use super::{check_dtypes, dtype_suffix, int, launch_1d, launch_error, nvrtc, Gpu, GpuTensor};
use crate::error::{shape_err, KernelError};
use crate::tensor::StoredDType;

/// Rows per block of the row softmax: one warp each.
const ROWS_PER_BLOCK: usize = 8;

const RELU: &str = "relu";
const ADD: &str = "add";
const SOFTMAX_ROWS: &str = "softmax_rows";
const SOFTMAX_COLUMNS: &str = "softmax_columns";

fn kernel_name(kernel: &str, dtype: StoredDType) -> String {
    format!("{kernel}_{}", dtype_suffix(dtype))
}

pub(crate) fn kernel_names(dtype: StoredDType) -> Vec<String> {
    let mut names: Vec<String> = [RELU, ADD, SOFTMAX_ROWS, SOFTMAX_COLUMNS]
        .iter()
        .map(|k| kernel_name(k, dtype))
        .collect();
    for to in [StoredDType::F32, StoredDType::F16, StoredDType::BF16] {
        if to != dtype {
            names.push(cast_name(dtype, to));
        }
    }
    names
}

fn cast_name(from: StoredDType, to: StoredDType) -> String {
    format!("cast_{}_{}", dtype_suffix(from), dtype_suffix(to))
}

/// ONNX Flatten: `[d0 .. d(axis-1)] x [d(axis) ..]` as two dimensions. No
/// data moves.
pub fn flatten(x: GpuTensor, axis: usize) -> Result<GpuTensor, KernelError> {
    if axis > x.shape().len() {
        return Err(shape_err(
            "Flatten",
            "input",
            x.shape(),
            format!("at least {axis} dimensions"),
        ));
    }
    let outer = x.shape()[..axis].iter().product();
    let inner = x.shape()[axis..].iter().product();
    x.reshape(vec![outer, inner])
}

impl Gpu {
    /// In place; NaN stays NaN.
    pub fn relu(&self, x: &mut GpuTensor) -> Result<(), KernelError> {
        self.check_owner("Relu", &[x])?;
        if x.is_empty() {
            return Ok(());
        }
        let n = x.len() as i64;
        let stream = self.stream();
        let ptr = x.ptr_mut(stream);
        let name = kernel_name(RELU, x.dtype());
        let f = self.function(&nvrtc::ELEMENTWISE, &name)?;
        let mut launch = stream.launch_builder(&f);
        launch.arg(&ptr).arg(&n);
        // SAFETY: x holds n values of its dtype on this device.
        unsafe { launch.launch(launch_1d(x.len(), 256)) }.map_err(launch_error(&name))?;
        Ok(())
    }

    /// `y += x`, elementwise, for tensors of one shape and type.
    pub fn add(&self, y: &mut GpuTensor, x: &GpuTensor) -> Result<(), KernelError> {
        self.check_owner("Add", &[&*y, x])?;
        check_dtypes("Add", &[&*y, x])?;
        if y.shape() != x.shape() {
            return Err(shape_err(
                "Add",
                "addend",
                x.shape(),
                format!("{:?}", y.shape()),
            ));
        }
        if y.is_empty() {
            return Ok(());
        }
        let n = y.len() as i64;
        let stream = self.stream();
        let src = x.ptr(stream);
        let dst = y.ptr_mut(stream);
        let name = kernel_name(ADD, y.dtype());
        let f = self.function(&nvrtc::ELEMENTWISE, &name)?;
        let mut launch = stream.launch_builder(&f);
        launch.arg(&dst).arg(&src).arg(&n);
        // SAFETY: y and x each hold n values of one dtype on this device.
        unsafe { launch.launch(launch_1d(y.len(), 256)) }.map_err(launch_error(&name))?;
        Ok(())
    }

    /// Softmax along one axis (ONNX opset 13 and later), in place.
    pub fn softmax(&self, x: &mut GpuTensor, axis: usize) -> Result<(), KernelError> {
        if axis >= x.shape().len() {
            return Err(shape_err(
                "Softmax",
                "input",
                x.shape(),
                format!("more than {axis} dimensions"),
            ));
        }
        let outer: usize = x.shape()[..axis].iter().product();
        let dim = x.shape()[axis];
        let inner: usize = x.shape()[axis + 1..].iter().product();
        self.softmax_3d(x, outer, dim, inner)
    }

    /// Softmax before opset 13: the input seen as 2-D, split at `axis`, each
    /// row of that view normalised as a whole. In place.
    pub fn softmax_coerced(&self, x: &mut GpuTensor, axis: usize) -> Result<(), KernelError> {
        if axis > x.shape().len() {
            return Err(shape_err(
                "Softmax",
                "input",
                x.shape(),
                format!("at least {axis} dimensions"),
            ));
        }
        let cols: usize = x.shape()[axis..].iter().product();
        let rows = x.len() / cols.max(1);
        self.softmax_3d(x, rows, cols, 1)
    }

    /// Softmax over the middle axis of `x` seen as `[outer, dim, inner]`.
    fn softmax_3d(
        &self,
        x: &mut GpuTensor,
        outer: usize,
        dim: usize,
        inner: usize,
    ) -> Result<(), KernelError> {
        self.check_owner("Softmax", &[x])?;
        if x.is_empty() {
            return Ok(());
        }
        let dim_arg = int("Softmax", "axis length", dim)?;
        let stream = self.stream();
        let ptr = x.ptr_mut(stream);
        let outer_arg = outer as i64;
        if inner == 1 {
            let name = kernel_name(SOFTMAX_ROWS, x.dtype());
            let f = self.function(&nvrtc::ELEMENTWISE, &name)?;
            let mut launch = stream.launch_builder(&f);
            launch.arg(&ptr).arg(&outer_arg).arg(&dim_arg);
            // SAFETY: x holds outer rows of dim values on this device.
            unsafe { launch.launch(launch_1d(outer, ROWS_PER_BLOCK)) }
                .map_err(launch_error(&name))?;
        } else {
            let inner_arg = inner as i64;
            let name = kernel_name(SOFTMAX_COLUMNS, x.dtype());
            let f = self.function(&nvrtc::ELEMENTWISE, &name)?;
            let mut launch = stream.launch_builder(&f);
            launch
                .arg(&ptr)
                .arg(&outer_arg)
                .arg(&dim_arg)
                .arg(&inner_arg);
            // SAFETY: x holds outer*dim*inner values on this device.
            unsafe { launch.launch(launch_1d(outer * inner, 256)) }.map_err(launch_error(&name))?;
        }
        Ok(())
    }

    /// A copy of `x` stored as `dtype` (rounded to nearest when narrowing).
    pub fn cast(&self, x: &GpuTensor, dtype: StoredDType) -> Result<GpuTensor, KernelError> {
        self.check_owner("Cast", &[x])?;
        let mut y = self.alloc(x.shape().to_vec(), dtype)?;
        if x.is_empty() {
            return Ok(y);
        }
        let stream = self.stream();
        let n = x.len() as i64;
        if dtype == x.dtype() {
            y.copy_from(x, stream)?;
            return Ok(y);
        }
        let (src, dst) = (x.ptr(stream), y.ptr_mut(stream));
        let name = cast_name(x.dtype(), dtype);
        let f = self.function(&nvrtc::ELEMENTWISE, &name)?;
        let mut launch = stream.launch_builder(&f);
        launch.arg(&src).arg(&dst).arg(&n);
        // SAFETY: x and y each hold n values of their dtypes on this device.
        unsafe { launch.launch(launch_1d(x.len(), 256)) }.map_err(launch_error(&name))?;
        Ok(y)
    }
}
