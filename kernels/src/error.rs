use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
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
    /// No usable device, or the device, its driver or the kernel compiler
    /// failed.
    #[error("{0}")]
    Device(String),
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
