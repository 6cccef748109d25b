//! mpinfer: neural-network inference across the ranks of an MPI job.
//!
//! The umbrella crate re-exports the workspace's libraries and owns the
//! `mpinfer` binary, the multi-rank tests and the benchmarks.

pub use mpinfer_collectives as collectives;
pub use mpinfer_kernels as kernels;
pub use mpinfer_launcher as launcher;
pub use mpinfer_runtime as runtime;
