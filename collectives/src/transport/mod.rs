//! Point-to-point byte transports the collective algorithms run on.
//!
//! Algorithms see only "send these bytes to that peer". Nonblocking traffic is
//! scoped: [`Transport::exchange`] posts every send and receive, runs caller
//! work while they are in flight, and returns only when all have completed, so
//! no buffer can be freed or touched while the transport still owns it.

mod counting;
mod local;
mod mpi;

pub use self::mpi::MpiTransport;
pub use counting::{Counting, PeerTraffic};
pub use local::{LocalTransport, LocalWorld};

pub use crate::tags::Tag;
use crate::watchdog::Watchdog;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TransportError {
    #[error("rank {rank}: peer {peer} is out of range for {size} ranks")]
    BadPeer {
        rank: usize,
        peer: usize,
        size: usize,
    },
    #[error(
        "rank {rank}: message from rank {peer} (tag {tag}) has {got} bytes, expected {expected}"
    )]
    LengthMismatch {
        rank: usize,
        peer: usize,
        tag: Tag,
        expected: usize,
        got: usize,
    },
    #[error("rank {rank}: no message from rank {peer} (tag {tag}) within {seconds} s")]
    Timeout {
        rank: usize,
        peer: usize,
        tag: Tag,
        seconds: u64,
    },
    #[error("rank {rank}: peer rank {peer} is gone")]
    PeerGone { rank: usize, peer: usize },
    /// An MPI call returned an error: `call` names it (for a nonblocking
    /// message, the call that posted it and the one that reported the
    /// failure), `class` is MPI's error class (`MPI_ERR_TRUNCATE`, ...), and
    /// `message` is what `MPI_Error_string` says about the error.
    #[error("rank {rank}: {call} failed on a message with rank {peer} (tag {tag}): {message}")]
    Mpi {
        rank: usize,
        call: &'static str,
        peer: usize,
        tag: Tag,
        class: i32,
        message: String,
    },
}

/// One outgoing message of an [`Transport::exchange`].
pub struct Outgoing<'a> {
    pub peer: usize,
    pub tag: Tag,
    pub data: &'a [u8],
}

/// One incoming message of an [`Transport::exchange`]; it must fill `data` exactly.
pub struct Incoming<'a> {
    pub peer: usize,
    pub tag: Tag,
    pub data: &'a mut [u8],
}

pub trait Transport {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;

    /// From now on, mark every wait on `watchdog` (see
    /// [`Watchdog::waiting`]), so that one that never ends is reported. The
    /// communicator that takes this transport calls it. A transport whose
    /// waits cannot outlast a timeout of their own may ignore it.
    fn set_watchdog(&mut self, watchdog: Watchdog) {
        let _ = watchdog;
    }

    /// Posts all `sends` and `recvs` (isend/irecv), runs `overlap` while they
    /// are in flight, then waits for every one of them. Without overlap work
    /// a transport may use cheaper blocking calls for a single message.
    fn exchange(
        &self,
        sends: &[Outgoing<'_>],
        recvs: &mut [Incoming<'_>],
        overlap: Option<&mut dyn FnMut()>,
    ) -> Result<(), TransportError>;

    fn send(&self, peer: usize, tag: Tag, data: &[u8]) -> Result<(), TransportError> {
        self.exchange(&[Outgoing { peer, tag, data }], &mut [], None)
    }

    fn recv(&self, peer: usize, tag: Tag, data: &mut [u8]) -> Result<(), TransportError> {
        self.exchange(&[], &mut [Incoming { peer, tag, data }], None)
    }

    /// Send to `dst` and receive from `src` at once: the building block of
    /// every pairwise step, deadlock-free whatever the message sizes.
    fn sendrecv(
        &self,
        dst: usize,
        send: &[u8],
        src: usize,
        recv: &mut [u8],
        tag: Tag,
    ) -> Result<(), TransportError> {
        self.exchange(
            &[Outgoing {
                peer: dst,
                tag,
                data: send,
            }],
            &mut [Incoming {
                peer: src,
                tag,
                data: recv,
            }],
            None,
        )
    }
}

/// A borrowed transport cannot take a watchdog: the owner's waits are
/// watched only if the owner gave it one.
impl<T: Transport + ?Sized> Transport for &T {
    fn rank(&self) -> usize {
        (**self).rank()
    }
    fn size(&self) -> usize {
        (**self).size()
    }
    fn exchange(
        &self,
        sends: &[Outgoing<'_>],
        recvs: &mut [Incoming<'_>],
        overlap: Option<&mut dyn FnMut()>,
    ) -> Result<(), TransportError> {
        (**self).exchange(sends, recvs, overlap)
    }
}

pub(crate) fn check_peer(rank: usize, size: usize, peer: usize) -> Result<(), TransportError> {
    if peer < size {
        Ok(())
    } else {
        Err(TransportError::BadPeer { rank, peer, size })
    }
}
