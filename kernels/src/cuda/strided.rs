//! Index spaces for the strided kernels (layout, broadcast, reduce, batched
//! matmul): collapsed as the CPU kernels collapse theirs, then packed into
//! the fixed-size arrays their parameter structs hold.

use cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};

use super::nvrtc::Source;
use super::{launch_error, Gpu};
use crate::cpu::strided::collapse;
use crate::error::KernelError;

/// `MAX_DIMS` of common.cuh.
pub(crate) const MAX_DIMS: usize = 8;

/// A collapsed index space and the strides of `N` operands over it.
pub(crate) struct Packed<const N: usize> {
    pub rank: i32,
    pub dims: [i64; MAX_DIMS],
    pub strides: [[i64; MAX_DIMS]; N],
}

/// `dims` with axes of extent 1 dropped and runs merged, as arrays; an
/// error if more than [`MAX_DIMS`] axes remain.
pub(crate) fn pack<const N: usize>(
    op: &'static str,
    dims: &[usize],
    strides: [&[isize]; N],
) -> Result<Packed<N>, KernelError> {
    let (dims, strides) = collapse(dims, strides);
    if dims.len() > MAX_DIMS {
        return Err(KernelError::Invalid {
            op,
            what: format!(
                "{} axes that do not merge into fewer; the device kernels walk at most {MAX_DIMS}",
                dims.len()
            ),
        });
    }
    let mut packed = Packed {
        rank: dims.len() as i32,
        dims: [1; MAX_DIMS],
        strides: [[0; MAX_DIMS]; N],
    };
    for (i, &d) in dims.iter().enumerate() {
        packed.dims[i] = d as i64;
    }
    for (to, from) in packed.strides.iter_mut().zip(&strides) {
        for (t, &f) in to.iter_mut().zip(from) {
            *t = f as i64;
        }
    }
    Ok(packed)
}

impl Gpu {
    /// Launches kernel `name` of `source` with one parameter struct.
    ///
    /// # Safety
    /// `P` must be the kernel's parameter type, and every device address in
    /// it a live buffer of this device covering what the kernel reaches.
    pub(crate) unsafe fn launch_params<P: DeviceRepr>(
        &self,
        source: &'static Source,
        name: &str,
        params: &P,
        cfg: LaunchConfig,
    ) -> Result<(), KernelError> {
        let f = self.function(source, name)?;
        let mut launch = self.stream().launch_builder(&f);
        launch.arg(params);
        // SAFETY: as the caller promises.
        unsafe { launch.launch(cfg) }.map_err(launch_error(name))?;
        Ok(())
    }
}
