//! Reading ONNX models into the [`Model`](crate::model::Model) mpinfer runs.
//!
//! The file is memory-mapped and decoded in place: an initializer stored as
//! `raw_data` is not read at load time, only located, so that each rank later
//! reads the slice of it that it holds (see [`Source::File`]). So is one
//! stored as external data, in a file beside the model (`external.rs`).
//!
//! Only sequential graphs are read: every node takes the previous node's
//! output as its one computed input, and constants (initializers, Constant
//! nodes) for the others. Supported:
//!
//! - Conv (2-D; `auto_pad` NOTSET, VALID, SAME_UPPER or SAME_LOWER, the last
//!   two turned into explicit pads from the input shape, which is known at
//!   load time except for the batch),
//! - Gemm (`transA`, `transB`, `alpha`, `beta`, a constant `C` broadcast along
//!   the rows), MatMul with a constant 2-D right operand, alone or followed
//!   by the Add of a constant bias (read as one Gemm),
//! - Relu, MaxPool, AveragePool (2-D), GlobalAveragePool, Flatten, Softmax,
//! - Reshape to a constant shape, or to a shape computed from the input's
//!   own by Shape, Gather, Unsqueeze, Concat (and Cast), as PyTorch writes
//!   `x.view(x.size(0), -1)`. When the graph input has a fixed batch size B,
//!   a constant target shape starting with B is read as starting with 0
//!   (keep the batch), so that a model exported for one batch size runs at
//!   any,
//! - BatchNormalization directly after a Conv, folded into it,
//! - Identity and Dropout, which are dropped.
//!
//! Opsets 11 to 21 of the default domain.
//!
//! [`Source::File`]: crate::model::Source::File

mod external;
mod import;
mod ops;
mod proto;

pub use import::load;
pub use ops::SUPPORTED_OPS;
