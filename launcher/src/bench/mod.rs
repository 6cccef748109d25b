//! Multi-rank benchmarks.

pub mod collectives;
pub mod timing;
