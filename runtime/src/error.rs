use std::path::PathBuf;
use thiserror::Error;

/// What can go wrong reading a model or an input, or planning a run.
#[derive(Debug, Error)]
pub enum ModelError {
    /// The message already carries the cause: it is not chained again.
    #[error("{}: {}", path.display(), error)]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The file is not what it claims to be (truncated, corrupt, oversized).
    #[error("{}: {}", path.display(), message)]
    Format { path: PathBuf, message: String },
    /// A node mpinfer cannot run.
    #[error("node {node} ({op_type}): {message}")]
    Unsupported {
        node: String,
        op_type: String,
        message: String,
    },
    #[error("layer {layer} ({op_type}): {message}")]
    Layer {
        layer: String,
        op_type: String,
        message: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Kernel(#[from] mpinfer_kernels::KernelError),
}
