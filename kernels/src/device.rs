//! Which device a rank computes on, decided at run time.
//!
//! The CUDA driver is loaded dynamically, and cudarc panics on the first
//! driver call when `libcuda` cannot be loaded, so every path here checks
//! that the library is present before touching the driver.

use std::fmt;
use std::str::FromStr;

use cudarc::driver::{result, sys};

use crate::cuda::driver_error;
use crate::error::KernelError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
    /// A CUDA device by driver ordinal (after `CUDA_VISIBLE_DEVICES`, which
    /// the driver applies itself).
    Cuda(usize),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

/// What the user asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceRequest {
    /// A GPU where one is usable, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// A GPU, or an error saying why there is none.
    Cuda,
}

impl FromStr for DeviceRequest {
    type Err = KernelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(DeviceRequest::Auto),
            "cpu" => Ok(DeviceRequest::Cpu),
            "cuda" => Ok(DeviceRequest::Cuda),
            _ => Err(KernelError::UnknownDevice(s.to_string())),
        }
    }
}

impl fmt::Display for DeviceRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceRequest::Auto => "auto",
            DeviceRequest::Cpu => "cpu",
            DeviceRequest::Cuda => "cuda",
        })
    }
}

/// The oldest driver the bindings are used with: cudarc resolves each
/// driver function on first call and panics if the library lacks it, and
/// everything used here exists in 12.0.
const MIN_DRIVER_VERSION: i32 = 12000;

/// Whether the CUDA driver library can be loaded at all.
pub fn cuda_driver_present() -> bool {
    // SAFETY: only tries to open the library by its usual names.
    unsafe { sys::is_culib_present() }
}

/// Loads and initialises the driver: `Err` says why CUDA cannot be used.
pub(crate) fn init_driver() -> Result<(), KernelError> {
    if !cuda_driver_present() {
        return Err(KernelError::Unavailable(
            "no CUDA driver library (libcuda.so) found".into(),
        ));
    }
    let mut version = 0;
    // SAFETY: the library is present; the pointer is valid.
    unsafe { sys::cuDriverGetVersion(&mut version) }
        .result()
        .map_err(driver_error("querying the driver version"))?;
    if version < MIN_DRIVER_VERSION {
        return Err(KernelError::Unavailable(format!(
            "no usable CUDA driver: version {}.{} is older than 12.0",
            version / 1000,
            version % 1000 / 10
        )));
    }
    result::init().map_err(driver_error("initialising the driver"))
}

/// Number of devices the driver shows this process.
fn device_count() -> Result<usize, KernelError> {
    init_driver()?;
    let n = result::device::get_count().map_err(driver_error("counting devices"))?;
    if n <= 0 {
        let visible = std::env::var("CUDA_VISIBLE_DEVICES")
            .map(|v| format!(" (CUDA_VISIBLE_DEVICES={v:?})"))
            .unwrap_or_default();
        return Err(KernelError::Unavailable(format!(
            "no CUDA device visible{visible}"
        )));
    }
    Ok(n as usize)
}

/// "NAME, compute capability X.Y" without creating a context (which would
/// reserve device memory).
fn describe(ordinal: usize) -> String {
    let Ok(dev) = result::device::get(ordinal as i32) else {
        return "unknown device".into();
    };
    let name = result::device::get_name(dev).unwrap_or_else(|_| "unknown device".into());
    let attr = |a| {
        // SAFETY: dev is a valid device handle from the initialised driver.
        unsafe { result::device::get_attribute(dev, a) }.unwrap_or(0)
    };
    let major = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR);
    let minor = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR);
    format!("{name}, compute capability {major}.{minor}")
}

/// Picks the device for a rank and says why, in one line fit for an info
/// log. Ranks on one node share its GPUs round-robin by `local_rank`. A GPU
/// counts as usable only with NVRTC present too, since every kernel is
/// compiled by it; `Auto` then falls back to the CPU, `Cuda` is the error
/// that says why there is none.
pub fn choose(request: DeviceRequest, local_rank: usize) -> Result<(Device, String), KernelError> {
    if request == DeviceRequest::Cpu {
        return Ok((Device::Cpu, "CPU requested".into()));
    }
    let usable = device_count().and_then(|count| {
        crate::cuda::nvrtc::ensure_loaded()
            .map(|_| count)
            .map_err(|e| KernelError::Unavailable(format!("CUDA device present but {}", e.chain())))
    });
    match (usable, request) {
        (Ok(count), _) => {
            let ordinal = local_rank % count;
            Ok((
                Device::Cuda(ordinal),
                format!(
                    "CUDA device {ordinal} of {count} ({}) for local rank {local_rank}",
                    describe(ordinal)
                ),
            ))
        }
        (Err(why), DeviceRequest::Auto) => {
            Ok((Device::Cpu, format!("{}; using the CPU", why.chain())))
        }
        (Err(why), _) => Err(why),
    }
}
