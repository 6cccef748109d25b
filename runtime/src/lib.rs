//! Plans and executes a model across ranks: who holds which rows, weight
//! slices and layers.

mod error;
pub mod exec;
pub mod graph;
pub mod model;
pub mod npy;
pub mod onnx;
pub mod run;
pub mod shards;
pub mod split;

pub use error::{ModelError, ReshapeError};
