use std::ops::{Range, RangeInclusive};
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
    /// A well-formed ONNX file whose opset mpinfer does not read.
    #[error(
        "{}: opset {opset} is not supported (mpinfer reads opsets {} to {})",
        path.display(),
        supported.start(),
        supported.end()
    )]
    Opset {
        path: PathBuf,
        opset: i64,
        supported: RangeInclusive<i64>,
    },
    /// A well-formed ONNX graph mpinfer does not run: not one input, an
    /// output that is not computed, or an input it cannot take.
    #[error("{}: {}", path.display(), message)]
    Graph { path: PathBuf, message: String },
    /// A node mpinfer cannot run.
    #[error("node {node} ({op_type}): {message}")]
    Unsupported {
        node: String,
        op_type: String,
        message: String,
    },
    /// A node whose inputs do not fit it (shapes, values), found while
    /// planning.
    #[error("node {node} ({op_type}): {message}")]
    Node {
        node: String,
        op_type: String,
        message: String,
    },
    #[error("weight {weight}: slice {ranges:?} outside its shape {shape:?}")]
    WeightSlice {
        weight: String,
        ranges: Vec<Range<usize>>,
        shape: Vec<usize>,
    },
    #[error("Softmax axis {axis} is outside a tensor of shape {shape:?}")]
    SoftmaxAxis { axis: i64, shape: Vec<usize> },
    #[error(transparent)]
    Reshape(#[from] ReshapeError),
    #[error("{}: rows {rows:?} outside its {available} rows", path.display())]
    RowsOutside {
        path: PathBuf,
        rows: Range<usize>,
        available: usize,
    },
    /// A file to be written whose size does not fit in memory arithmetic.
    #[error("{}: shape {shape:?} is too large", path.display())]
    ShapeTooLarge { path: PathBuf, shape: Vec<usize> },
    #[error("{}: {values} values are not whole rows of {row_len}", path.display())]
    NotWholeRows {
        path: PathBuf,
        values: usize,
        row_len: usize,
    },
    #[error("{}: {values} more values would exceed the {declared} declared", path.display())]
    PastDeclared {
        path: PathBuf,
        values: usize,
        declared: usize,
    },
    /// Finished before every declared value was written.
    #[error("{}: {written} of {declared} values written", path.display())]
    ShortWrite {
        path: PathBuf,
        written: usize,
        declared: usize,
    },
    #[error(transparent)]
    Kernel(#[from] mpinfer_kernels::KernelError),
}

/// A Reshape target that does not fit the tensor it is applied to.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ReshapeError {
    /// A 0 (copy the input's dimension) where the input has no such axis.
    #[error("shape {target:?}: no input dimension {axis} to copy")]
    NoDimensionToCopy { target: Vec<i64>, axis: usize },
    /// A negative entry other than a single -1.
    #[error("shape {target:?} is not a valid Reshape target")]
    BadTarget { target: Vec<i64> },
    #[error("cannot reshape {input:?} to {target:?}")]
    Mismatch { input: Vec<usize>, target: Vec<i64> },
}
