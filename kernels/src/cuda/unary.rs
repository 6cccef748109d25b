//! Element-wise unary ops on the device (`unary.cu`), in place.

use cudarc::driver::PushKernelArg;

use super::{dtype_suffix, launch_1d, launch_error, nvrtc, Gpu, GpuTensor};
use crate::cpu::Unary;
use crate::error::KernelError;
use crate::tensor::StoredDType;

const UNARY: &str = "unary";

pub(crate) fn kernel_name(dtype: StoredDType) -> String {
    format!("{UNARY}_{}", dtype_suffix(dtype))
}

/// The kernel's op code (the `UNARY_*` of unary.cu) and its two float
/// parameters.
fn code(op: Unary) -> (i32, f32, f32) {
    match op {
        Unary::Relu => (0, 0.0, 0.0),
        Unary::Sigmoid => (1, 0.0, 0.0),
        Unary::Tanh => (2, 0.0, 0.0),
        Unary::Erf => (3, 0.0, 0.0),
        Unary::Sqrt => (4, 0.0, 0.0),
        Unary::Exp => (5, 0.0, 0.0),
        Unary::Log => (6, 0.0, 0.0),
        Unary::Neg => (7, 0.0, 0.0),
        Unary::Abs => (8, 0.0, 0.0),
        Unary::Reciprocal => (9, 0.0, 0.0),
        Unary::LeakyRelu { alpha } => (10, alpha, 0.0),
        Unary::HardSigmoid { alpha, beta } => (11, alpha, beta),
        Unary::HardSwish => (12, 0.0, 0.0),
        Unary::Clip { min, max } => (13, min, max),
        Unary::Gelu { tanh: false } => (14, 0.0, 0.0),
        Unary::Gelu { tanh: true } => (15, 0.0, 0.0),
        // A square is exact as a product; powf need not be.
        Unary::Pow { exponent: 2.0 } => (17, 0.0, 0.0),
        Unary::Pow { exponent } => (16, exponent, 0.0),
    }
}

impl Gpu {
    /// `op` applied to every element of `x`, with [`crate::cpu::unary`]'s
    /// rules (NaN kept by ReLU and Clip, both forms of Gelu).
    pub fn unary(&self, op: Unary, x: &mut GpuTensor) -> Result<(), KernelError> {
        self.check_owner("Unary", &[x])?;
        if x.is_empty() {
            return Ok(());
        }
        let (op_code, p, q) = code(op);
        let n = x.len() as i64;
        let stream = self.stream();
        let ptr = x.ptr_mut(stream);
        let name = kernel_name(x.dtype());
        let f = self.function(&nvrtc::UNARY, &name)?;
        let mut launch = stream.launch_builder(&f);
        launch.arg(&ptr).arg(&n).arg(&op_code).arg(&p).arg(&q);
        // SAFETY: x holds n values of its dtype on this device.
        unsafe { launch.launch(launch_1d(x.len(), 256)) }.map_err(launch_error(&name))?;
        Ok(())
    }
}
