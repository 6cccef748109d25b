//! Multi-rank benchmarks.

pub mod collectives;
pub mod plot;
pub mod timing;
