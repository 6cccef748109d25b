//! How one collective call runs: where its input is, which algorithm runs
//! it, its root, and how its vector is cut into per-rank blocks.
//!
//! Every collective takes one [`Opts`], typed by a marker for that
//! collective ([`Allreduce`], [`Reduce`], ...). The marker decides which
//! setters exist, so an option the collective has no use for does not
//! compile: a root for allreduce, counts for broadcast, an algorithm for
//! gather (which has one).
//!
//! ```
//! use mpinfer_collectives::{AllreduceAlgo, Communicator, Config, LocalWorld, Opts, ReduceOp};
//!
//! let sums = LocalWorld::run(2, |t| {
//!     let comm = Communicator::new(t, Config::default());
//!     let x = [comm.rank() as f32 + 1.0; 4];
//!     let mut sum = [0.0f32; 4];
//!     let ring = Opts::default().send(&x).algorithm(AllreduceAlgo::Ring);
//!     comm.allreduce(&mut sum, ReduceOp::Sum, ring).unwrap();
//!     comm.allreduce(&mut sum, ReduceOp::Max, Opts::default()).unwrap(); // in place
//!     sum
//! });
//! assert_eq!(sums, [[3.0; 4], [3.0; 4]]);
//! ```
//!
//! ```compile_fail
//! use mpinfer_collectives::{Communicator, Config, LocalWorld, Opts, ReduceOp};
//!
//! LocalWorld::run(2, |t| {
//!     let comm = Communicator::new(t, Config::default());
//!     let mut v = [1.0f32; 4];
//!     // allreduce has no root
//!     comm.allreduce(&mut v, ReduceOp::Sum, Opts::default().root(1)).unwrap();
//! });
//! ```

use crate::select::{AllgatherAlgo, AllreduceAlgo, BroadcastAlgo, ReduceAlgo};
use std::marker::PhantomData;

/// Options of one call of the collective `C`, for elements `E`.
///
/// The default works in place, with the algorithm the communicator's
/// [`Config`](crate::Config) names (`auto` unless overridden), root 0, and
/// even blocks.
pub struct Opts<'a, E, C: Kind> {
    pub(crate) send: Option<&'a [E]>,
    pub(crate) algorithm: Option<C::Algo>,
    pub(crate) root: usize,
    pub(crate) counts: Option<&'a [usize]>,
    collective: PhantomData<C>,
}

/// A collective that [`Opts`] can be for.
pub trait Kind {
    /// The algorithms it chooses from; `()` where it has only one.
    type Algo: Copy;
}

/// Reads its input from a separate buffer when given [`Opts::send`].
pub trait OutOfPlace: Kind {}
/// Runs one of several algorithms, chosen with [`Opts::algorithm`].
pub trait Chooses: Kind {}
/// Has a root rank, set with [`Opts::root`].
pub trait Rooted: Kind {}
/// Takes per-rank block counts, set with [`Opts::counts`].
pub trait Uneven: Kind {}

macro_rules! kinds {
    ($($(#[$doc:meta])* $name:ident: $algo:ty $(, $cap:ident)*;)+) => {$(
        $(#[$doc])*
        pub enum $name {}
        impl Kind for $name {
            type Algo = $algo;
        }
        $(impl $cap for $name {})*
    )+};
}

kinds! {
    /// [`Communicator::allreduce`](crate::Communicator::allreduce).
    Allreduce: AllreduceAlgo, OutOfPlace, Chooses;
    /// [`Communicator::reduce`](crate::Communicator::reduce).
    Reduce: ReduceAlgo, OutOfPlace, Chooses, Rooted;
    /// [`Communicator::allgather`](crate::Communicator::allgather).
    Allgather: AllgatherAlgo, OutOfPlace, Chooses, Uneven;
    /// [`Communicator::broadcast`](crate::Communicator::broadcast).
    Broadcast: BroadcastAlgo, Chooses, Rooted;
    /// [`Communicator::reduce_scatter`](crate::Communicator::reduce_scatter) (ring).
    ReduceScatter: (), OutOfPlace, Uneven;
    /// [`Communicator::gather`](crate::Communicator::gather) (linear).
    Gather: (), Rooted, Uneven;
    /// [`Communicator::scatter`](crate::Communicator::scatter) (linear).
    Scatter: (), Rooted, Uneven;
}

impl<E, C: Kind> Opts<'_, E, C> {
    /// The defaults; the same as [`Opts::default`].
    pub fn new() -> Self {
        Opts {
            send: None,
            algorithm: None,
            root: 0,
            counts: None,
            collective: PhantomData,
        }
    }
}

impl<'a, E, C: OutOfPlace> Opts<'a, E, C> {
    /// Out of place: the input is `send`, read where the algorithm first
    /// needs it and never written; the call's buffer only receives.
    pub fn send(self, send: &'a [E]) -> Self {
        Opts {
            send: Some(send),
            ..self
        }
    }
}

impl<E, C: Chooses> Opts<'_, E, C> {
    /// Runs `algorithm`, its `Auto` choosing by vector size and rank count,
    /// instead of the one the communicator's configuration names.
    pub fn algorithm(self, algorithm: C::Algo) -> Self {
        Opts {
            algorithm: Some(algorithm),
            ..self
        }
    }
}

impl<E, C: Rooted> Opts<'_, E, C> {
    pub fn root(self, root: usize) -> Self {
        Opts { root, ..self }
    }
}

impl<'a, E, C: Uneven> Opts<'a, E, C> {
    /// Rank `i`'s block has `counts[i]` elements (one entry per rank).
    pub fn counts(self, counts: &'a [usize]) -> Self {
        Opts {
            counts: Some(counts),
            ..self
        }
    }
}

impl<E, C: Kind> Default for Opts<'_, E, C> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E, C: Kind> Clone for Opts<'_, E, C> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<E, C: Kind> Copy for Opts<'_, E, C> {}
