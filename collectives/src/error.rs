use crate::check::Signature;
use crate::transport::TransportError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CollectiveError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("rank {rank}: {what} has {got} elements, expected {expected}")]
    BadLength {
        rank: usize,
        what: &'static str,
        got: usize,
        expected: usize,
    },
    #[error("rank {rank}: root {root} is out of range for {size} ranks")]
    BadRoot {
        rank: usize,
        root: usize,
        size: usize,
    },
    #[error("rank {rank}: counts list has {got} entries for {size} ranks")]
    BadCounts {
        rank: usize,
        got: usize,
        size: usize,
    },
    #[error("collective mismatch: rank {rank} called {ours} but rank {peer} called {theirs}")]
    Mismatch {
        rank: usize,
        peer: usize,
        ours: Box<Signature>,
        theirs: Box<Signature>,
    },
    #[error("rank {rank}: {wanted} message tags asked for, but only {left} are left to reserve")]
    TagsExhausted {
        rank: usize,
        wanted: usize,
        left: usize,
    },
    #[error("rank {rank}: rank {peer} sent bytes that are not a collective signature (is it running another program?)")]
    BadSignature { rank: usize, peer: usize },
}
