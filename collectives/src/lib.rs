//! Collective operations for mpinfer, written on point-to-point messages.
//!
//! A [`Transport`] moves bytes between two ranks (MPI, threads of one
//! process, or a counting wrapper around either); a [`Communicator`] runs
//! allreduce, reduce, allgather, broadcast, reduce-scatter, gather, scatter
//! and barrier on it with the algorithms in [`algo`], one per file, chosen by
//! name or by [`Tuning`] from the vector size and rank count.
//!
//! Each collective is one method taking an [`Opts`] for the call: in place
//! or out of place ([`Opts::send`]), the algorithm ([`Opts::algorithm`],
//! else the one [`Config`] names), the root ([`Opts::root`]) and uneven
//! per-rank blocks ([`Opts::counts`]), each settable only where the
//! collective has a use for it (see [`opts`]).
//!
//! ```no_run
//! # use mpinfer_collectives::*;
//! # fn f(comm: &Communicator<MpiTransport>, counts: &[usize]) -> Result<(), CollectiveError> {
//! let x = vec![1.0f32; 1024];
//! let mut sum = vec![0.0f32; 1024];
//! comm.allreduce(&mut sum, ReduceOp::Sum, Opts::default().send(&x))?;
//! comm.broadcast(&mut sum, Opts::default().root(1))?;
//! let mine = vec![comm.rank() as u8; counts[comm.rank()]];
//! let mut all = vec![0u8; counts.iter().sum()];
//! comm.allgather(&mut all, Opts::default().send(&mine).counts(counts))?;
//! # Ok(())
//! # }
//! ```

pub mod algo;
pub mod check;
mod comm;
mod element;
mod error;
mod half_math;
mod op;
pub mod opts;
mod select;
pub mod tags;
pub mod transport;
mod watchdog;

pub use comm::{parse_bytes, Communicator, Config};
pub use element::{DType, Element};
pub use error::CollectiveError;
pub use half::{bf16, f16};
pub use op::ReduceOp;
pub use opts::Opts;
pub use select::{AllgatherAlgo, AllreduceAlgo, BroadcastAlgo, ReduceAlgo, Tuning};
pub use tags::{Tag, TagRange};
pub use transport::{
    Counting, LocalTransport, LocalWorld, MpiTransport, Transport, TransportError,
};
pub use watchdog::{Waiting, Watchdog};
