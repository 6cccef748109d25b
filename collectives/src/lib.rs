//! Collective operations for mpinfer, written on point-to-point messages.
//!
//! A [`Transport`] moves bytes between two ranks (MPI, threads of one
//! process, or a counting wrapper around either); a [`Communicator`] runs
//! allreduce, reduce, allgather(v), broadcast, reduce-scatter, gather(v),
//! scatter(v) and barrier on it with the algorithms in [`algo`], one per file,
//! chosen by name or by [`Tuning`] from the vector size and rank count.

pub mod algo;
pub mod check;
mod comm;
mod element;
mod error;
mod half_math;
mod op;
mod select;
pub mod tags;
pub mod transport;
mod watchdog;

pub use comm::{parse_bytes, Communicator, Config};
pub use element::{DType, Element};
pub use error::CollectiveError;
pub use half::{bf16, f16};
pub use op::ReduceOp;
pub use select::{AllgatherAlgo, AllreduceAlgo, BroadcastAlgo, ReduceAlgo, Tuning};
pub use tags::{Tag, TagRange};
pub use transport::{
    Counting, LocalTransport, LocalWorld, MpiTransport, Transport, TransportError,
};
pub use watchdog::{Waiting, Watchdog};
