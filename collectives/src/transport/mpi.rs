//! MPI point-to-point as a transport. Only isend/irecv/waitall are used:
//! the collectives are ours, MPI just moves bytes between two ranks.

use super::{check_peer, Incoming, Outgoing, Transport, TransportError};
use crate::watchdog::Watchdog;
use mpi::ffi;
use mpi::raw::AsRaw;
use mpi::topology::{Communicator, SimpleCommunicator};
use std::cell::RefCell;
use std::os::raw::{c_int, c_void};

/// MPI counts are `int`; larger messages travel as several pieces of this size.
const PIECE: usize = 1 << 30;

/// Messages up to this many eager-sized pieces are split into them.
const EAGER_PIECES: usize = 4;

pub struct MpiTransport {
    comm: SimpleCommunicator,
    rank: usize,
    size: usize,
    // Reused across calls: the hot loop allocates nothing.
    requests: RefCell<Vec<ffi::MPI_Request>>,
    statuses: RefCell<Vec<ffi::MPI_Status>>,
    eager_bytes: usize,
    watchdog: Watchdog,
}

impl MpiTransport {
    /// Our own communicator, duplicated from `parent`, so collective traffic can
    /// never match a message the application sends on `parent`.
    pub fn new<C: Communicator>(parent: &C) -> Self {
        let comm = parent.duplicate();
        let rank = comm.rank() as usize;
        let size = comm.size() as usize;
        MpiTransport {
            comm,
            rank,
            size,
            requests: RefCell::new(Vec::new()),
            statuses: RefCell::new(Vec::new()),
            eager_bytes: crate::Tuning::default().eager_bytes,
            watchdog: Watchdog::new(),
        }
    }

    /// A message a little over the library's eager limit pays a rendezvous
    /// handshake; a few eager pieces cost less. Both ends derive the pieces
    /// from the message length alone, so they always agree. 0 turns it off.
    pub fn set_eager_bytes(&mut self, bytes: usize) {
        self.eager_bytes = bytes;
    }
}

/// How one message of `len` bytes travels: nearly equal pieces, several when
/// it is just over the eager limit or over what an MPI count can say.
fn pieces(len: usize, eager: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let n = if eager > 0 && len > eager && len <= EAGER_PIECES * eager {
        len.div_ceil(eager)
    } else {
        len.div_ceil(PIECE).max(1)
    };
    (0..n).map(move |i| i * (len / n) + i.min(len % n)..(i + 1) * (len / n) + (i + 1).min(len % n))
}

impl MpiTransport {
    /// One message, or one each way, with nothing to overlap: the blocking
    /// calls skip request bookkeeping, which is most of the cost of a small
    /// message. `None` where the exchange does not fit.
    fn blocking(
        &self,
        sends: &[Outgoing<'_>],
        recvs: &mut [Incoming<'_>],
    ) -> Option<Result<(), TransportError>> {
        let comm = self.comm.as_raw();
        let fits = |len: usize| pieces(len, self.eager_bytes).nth(1).is_none();
        // SAFETY: the buffers are borrowed for the duration of each blocking
        // call, which returns only when MPI is done with them.
        unsafe {
            match (sends, &mut *recvs) {
                ([s], []) if fits(s.data.len()) => {
                    ffi::MPI_Send(
                        s.data.as_ptr() as *const c_void,
                        s.data.len() as c_int,
                        ffi::RSMPI_UINT8_T,
                        s.peer as c_int,
                        s.tag as c_int,
                        comm,
                    );
                    Some(Ok(()))
                }
                ([], [r]) if fits(r.data.len()) => {
                    let mut status: ffi::MPI_Status = std::mem::zeroed();
                    ffi::MPI_Recv(
                        r.data.as_mut_ptr() as *mut c_void,
                        r.data.len() as c_int,
                        ffi::RSMPI_UINT8_T,
                        r.peer as c_int,
                        r.tag as c_int,
                        comm,
                        &mut status,
                    );
                    Some(self.check_count(&status, r, 0..r.data.len()))
                }
                ([s], [r]) if fits(s.data.len()) && fits(r.data.len()) => {
                    let mut status: ffi::MPI_Status = std::mem::zeroed();
                    ffi::MPI_Sendrecv(
                        s.data.as_ptr() as *const c_void,
                        s.data.len() as c_int,
                        ffi::RSMPI_UINT8_T,
                        s.peer as c_int,
                        s.tag as c_int,
                        r.data.as_mut_ptr() as *mut c_void,
                        r.data.len() as c_int,
                        ffi::RSMPI_UINT8_T,
                        r.peer as c_int,
                        r.tag as c_int,
                        comm,
                        &mut status,
                    );
                    Some(self.check_count(&status, r, 0..r.data.len()))
                }
                _ => None,
            }
        }
    }

    /// A longer message than posted is an MPI truncation error (fatal by
    /// default); a shorter one completes quietly, so check it here.
    fn check_count(
        &self,
        status: &ffi::MPI_Status,
        r: &Incoming<'_>,
        piece: std::ops::Range<usize>,
    ) -> Result<(), TransportError> {
        let mut count: c_int = 0;
        // SAFETY: `status` belongs to a completed receive.
        unsafe {
            ffi::MPI_Get_count(status, ffi::RSMPI_UINT8_T, &mut count);
        }
        if count as usize == piece.len() {
            Ok(())
        } else {
            Err(TransportError::LengthMismatch {
                rank: self.rank,
                peer: r.peer,
                tag: r.tag,
                expected: r.data.len(),
                got: piece.start + count as usize,
            })
        }
    }
}

impl Transport for MpiTransport {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn set_watchdog(&mut self, watchdog: Watchdog) {
        self.watchdog = watchdog;
    }

    fn exchange(
        &self,
        sends: &[Outgoing<'_>],
        recvs: &mut [Incoming<'_>],
        overlap: Option<&mut dyn FnMut()>,
    ) -> Result<(), TransportError> {
        for s in sends {
            check_peer(self.rank, self.size, s.peer)?;
        }
        for r in recvs.iter() {
            check_peer(self.rank, self.size, r.peer)?;
        }
        // What this rank waits on, should the wait never end: the first
        // receive, else the first send.
        let _waiting = recvs
            .first()
            .map(|r| (r.peer, r.tag))
            .or(sends.first().map(|s| (s.peer, s.tag)))
            .and_then(|(peer, tag)| self.watchdog.waiting(peer, tag));
        if overlap.is_none() {
            if let Some(done) = self.blocking(sends, recvs) {
                return done;
            }
        }
        let mut requests = self.requests.borrow_mut();
        let mut statuses = self.statuses.borrow_mut();
        requests.clear();
        let comm = self.comm.as_raw();
        // SAFETY: every buffer handed to MPI is borrowed for the whole call, and
        // the call does not return before MPI_Waitall has completed every request.
        unsafe {
            // Receives first, so an arriving message finds its buffer posted.
            for r in recvs.iter_mut() {
                for p in pieces(r.data.len(), self.eager_bytes) {
                    let mut req = ffi::RSMPI_REQUEST_NULL;
                    ffi::MPI_Irecv(
                        r.data[p.clone()].as_mut_ptr() as *mut c_void,
                        p.len() as c_int,
                        ffi::RSMPI_UINT8_T,
                        r.peer as c_int,
                        r.tag as c_int,
                        comm,
                        &mut req,
                    );
                    requests.push(req);
                }
            }
            let recv_requests = requests.len();
            for s in sends {
                for p in pieces(s.data.len(), self.eager_bytes) {
                    let mut req = ffi::RSMPI_REQUEST_NULL;
                    ffi::MPI_Isend(
                        s.data[p.clone()].as_ptr() as *const c_void,
                        p.len() as c_int,
                        ffi::RSMPI_UINT8_T,
                        s.peer as c_int,
                        s.tag as c_int,
                        comm,
                        &mut req,
                    );
                    requests.push(req);
                }
            }
            if let Some(work) = overlap {
                work();
            }
            statuses.clear();
            statuses.resize_with(requests.len(), || std::mem::zeroed());
            ffi::MPI_Waitall(
                requests.len() as c_int,
                requests.as_mut_ptr(),
                statuses.as_mut_ptr(),
            );
            let mut i = 0;
            for r in recvs.iter() {
                for p in pieces(r.data.len(), self.eager_bytes) {
                    self.check_count(&statuses[i], r, p)?;
                    i += 1;
                }
            }
            debug_assert_eq!(i, recv_requests);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_the_message_in_order() {
        for (len, eager, n) in [
            (0, 3968, 1),
            (100, 3968, 1),
            (3968, 3968, 1),
            (4096, 3968, 2),
            (8192, 3968, 3),
            (15872, 3968, 4),
            (15873, 3968, 1),
            (4096, 0, 1),
        ] {
            let p: Vec<_> = pieces(len, eager).collect();
            assert_eq!(p.len(), n, "len {len}");
            assert_eq!(p.first().unwrap().start, 0);
            assert_eq!(p.last().unwrap().end, len);
            assert!(p.windows(2).all(|w| w[0].end == w[1].start));
            assert!(p.iter().all(|r| eager == 0 || n == 1 || r.len() <= eager));
        }
        let big: Vec<_> = pieces(3 * PIECE + 5, 3968).collect();
        assert_eq!(big.len(), 4);
        assert!(big.iter().all(|r| r.len() <= PIECE));
    }
}
