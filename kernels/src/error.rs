use std::path::PathBuf;

use cudarc::driver::DriverError;
use cudarc::nvrtc::result::NvrtcError;
use thiserror::Error;

/// What a kernel, or finding a device to run it on, failed with. Failures
/// of the CUDA driver, NVRTC and the dynamic loader keep their error as the
/// source, with what was being done as the message; print the chain
/// (`{:#}` through anyhow, or [`KernelError::chain`]) to see both.
#[derive(Debug, Error)]
pub enum KernelError {
    #[error("{op}: {what} has shape {got:?}, expected {expected}")]
    Shape {
        op: &'static str,
        what: &'static str,
        got: Vec<usize>,
        expected: String,
    },
    #[error("{op}: {what}")]
    Invalid { op: &'static str, what: String },
    /// A device name that is none of auto, cpu, cuda.
    #[error("unknown device {0:?}: expected auto, cpu or cuda")]
    UnknownDevice(String),
    /// CUDA cannot be used here: no driver library, too old a driver, no
    /// device (or not the one asked for), no NVRTC. Says why in words.
    #[error("{0}")]
    Unavailable(String),
    /// A CUDA driver call failed.
    #[error("CUDA {what}")]
    Driver {
        what: String,
        #[source]
        source: DriverError,
    },
    /// An NVRTC call other than the compilation itself failed.
    #[error("NVRTC {what}")]
    Nvrtc {
        what: String,
        #[source]
        source: NvrtcError,
    },
    /// A kernel source did not compile; `log` is NVRTC's.
    #[error("NVRTC compiling {file} for {arch}:\n{log}")]
    Compile {
        file: &'static str,
        arch: String,
        log: String,
        #[source]
        source: NvrtcError,
    },
    /// The NVRTC library at `path` did not load.
    #[error("cannot load NVRTC from {}", path.display())]
    LoadNvrtc {
        path: PathBuf,
        #[source]
        source: libloading::Error,
    },
}

pub(crate) fn shape_err(
    op: &'static str,
    what: &'static str,
    got: &[usize],
    expected: impl Into<String>,
) -> KernelError {
    KernelError::Shape {
        op,
        what,
        got: got.to_vec(),
        expected: expected.into(),
    }
}

/// Refuses an `axis` that `shape` does not have.
pub(crate) fn check_axis(
    op: &'static str,
    what: &'static str,
    shape: &[usize],
    axis: usize,
) -> Result<(), KernelError> {
    if axis < shape.len() {
        Ok(())
    } else {
        Err(shape_err(
            op,
            what,
            shape,
            format!("more than {axis} dimensions"),
        ))
    }
}

impl KernelError {
    /// The message and each source's, joined by ": ": for messages that are
    /// strings (a device choice's reason, a list of what was tried).
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }
}
