//! Plans and executes a model across ranks: who holds which rows, weight
//! slices and layers.

mod error;
pub mod model;

pub use error::ModelError;
