//! MPI point-to-point as a transport. Only send/recv/sendrecv and
//! isend/irecv/waitall are used: the collectives are ours, MPI just moves
//! bytes between two ranks.
//!
//! The communicator returns MPI's errors instead of aborting on them, and
//! every call's code is checked: a failure becomes [`TransportError::Mpi`],
//! naming the call, the peer and MPI's own description, so the launcher can
//! report it like any other error of the job.

use super::{check_peer, Incoming, Outgoing, Tag, Transport, TransportError};
use crate::watchdog::Watchdog;
use mpi::ffi;
use mpi::raw::AsRaw;
use mpi::topology::{Communicator, SimpleCommunicator};
use std::cell::RefCell;
use std::os::raw::{c_char, c_int, c_void};

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
    /// What each of `requests` carries, to name it in an error.
    posted: RefCell<Vec<Posted>>,
    eager_bytes: usize,
    watchdog: Watchdog,
}

#[derive(Clone, Copy)]
struct Posted {
    call: &'static str,
    peer: usize,
    tag: Tag,
}

impl MpiTransport {
    /// Our own communicator, duplicated from `parent`, so collective traffic can
    /// never match a message the application sends on `parent`.
    ///
    /// # Panics
    ///
    /// If MPI refuses to return errors on the duplicate (it cannot, on a
    /// communicator it has just made).
    pub fn new<C: Communicator>(parent: &C) -> Self {
        let comm = parent.duplicate();
        let rank = comm.rank() as usize;
        let size = comm.size() as usize;
        // SAFETY: `comm` is a valid communicator, and MPI_ERRORS_RETURN is a
        // predefined error handler.
        let code = unsafe { ffi::MPI_Comm_set_errhandler(comm.as_raw(), ffi::RSMPI_ERRORS_RETURN) };
        assert!(
            code == SUCCESS,
            "rank {rank}: MPI_Comm_set_errhandler failed: {}",
            error_string(code)
        );
        MpiTransport {
            comm,
            rank,
            size,
            requests: RefCell::new(Vec::new()),
            statuses: RefCell::new(Vec::new()),
            posted: RefCell::new(Vec::new()),
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

    /// `Ok` for MPI_SUCCESS; else the error, in MPI's words.
    fn check(
        &self,
        code: c_int,
        call: &'static str,
        peer: usize,
        tag: Tag,
    ) -> Result<(), TransportError> {
        if code == SUCCESS {
            return Ok(());
        }
        let mut class = code;
        // SAFETY: MPI_Error_class only writes the class of `code` into `class`.
        if unsafe { ffi::MPI_Error_class(code, &mut class) } != SUCCESS {
            class = code;
        }
        Err(TransportError::Mpi {
            rank: self.rank,
            call,
            peer,
            tag,
            class,
            message: error_string(code),
        })
    }
}

const SUCCESS: c_int = ffi::MPI_SUCCESS as c_int;
const ERR_IN_STATUS: c_int = ffi::MPI_ERR_IN_STATUS as c_int;
const ERR_PENDING: c_int = ffi::MPI_ERR_PENDING as c_int;

/// MPI's description of an error code, on one line: MPICH appends an error
/// stack of several lines, and the job's report is one `error:` line.
fn error_string(code: c_int) -> String {
    const MAX: usize = ffi::MPI_MAX_ERROR_STRING as usize;
    let mut text: [c_char; MAX] = [0; MAX];
    let mut len: c_int = 0;
    // SAFETY: `text` has the MPI_MAX_ERROR_STRING characters MPI_Error_string
    // may write; it writes the length it used into `len`.
    let code_ok = unsafe { ffi::MPI_Error_string(code, text.as_mut_ptr(), &mut len) };
    if code_ok != SUCCESS {
        return format!("MPI error code {code}");
    }
    let bytes: Vec<u8> = text[..(len.max(0) as usize).min(MAX)]
        .iter()
        .map(|&c| c as u8)
        .collect();
    let text = String::from_utf8_lossy(&bytes);
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
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
        // call, which returns only when MPI is done with them; a zeroed
        // MPI_Status is a valid value of that plain C struct.
        unsafe {
            match (sends, &mut *recvs) {
                ([s], []) if fits(s.data.len()) => {
                    let code = ffi::MPI_Send(
                        s.data.as_ptr() as *const c_void,
                        s.data.len() as c_int,
                        ffi::RSMPI_UINT8_T,
                        s.peer as c_int,
                        s.tag as c_int,
                        comm,
                    );
                    Some(self.check(code, "MPI_Send", s.peer, s.tag))
                }
                ([], [r]) if fits(r.data.len()) => {
                    let mut status: ffi::MPI_Status = std::mem::zeroed();
                    let code = ffi::MPI_Recv(
                        r.data.as_mut_ptr() as *mut c_void,
                        r.data.len() as c_int,
                        ffi::RSMPI_UINT8_T,
                        r.peer as c_int,
                        r.tag as c_int,
                        comm,
                        &mut status,
                    );
                    Some(
                        self.check(code, "MPI_Recv", r.peer, r.tag)
                            .and_then(|()| self.check_count(&status, r, 0..r.data.len())),
                    )
                }
                ([s], [r]) if fits(s.data.len()) && fits(r.data.len()) => {
                    let mut status: ffi::MPI_Status = std::mem::zeroed();
                    let code = ffi::MPI_Sendrecv(
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
                    // One code for both halves: named after the receive,
                    // where the errors of a well-formed call arise (a
                    // message longer than its buffer).
                    Some(
                        self.check(code, "MPI_Sendrecv", r.peer, r.tag)
                            .and_then(|()| self.check_count(&status, r, 0..r.data.len())),
                    )
                }
                _ => None,
            }
        }
    }

    /// A longer message than posted is an MPI truncation error; a shorter
    /// one completes quietly, so check it here.
    fn check_count(
        &self,
        status: &ffi::MPI_Status,
        r: &Incoming<'_>,
        piece: std::ops::Range<usize>,
    ) -> Result<(), TransportError> {
        let mut count: c_int = 0;
        // SAFETY: `status` belongs to a completed receive.
        let code = unsafe { ffi::MPI_Get_count(status, ffi::RSMPI_UINT8_T, &mut count) };
        self.check(code, "MPI_Get_count", r.peer, r.tag)?;
        if usize::try_from(count) == Ok(piece.len()) {
            Ok(())
        } else {
            Err(TransportError::LengthMismatch {
                rank: self.rank,
                peer: r.peer,
                tag: r.tag,
                expected: r.data.len(),
                got: piece.start + count.max(0) as usize,
            })
        }
    }

    /// Posts every piece of every receive, then of every send, stopping at
    /// the first call that fails. The requests posted are left in
    /// `requests` either way: they must be completed before the buffers
    /// they point into are released.
    ///
    /// # Safety
    ///
    /// The caller must complete every request left in `requests` before
    /// `sends` or `recvs` are dropped, moved or touched again.
    unsafe fn post(
        &self,
        sends: &[Outgoing<'_>],
        recvs: &mut [Incoming<'_>],
        requests: &mut Vec<ffi::MPI_Request>,
        posted: &mut Vec<Posted>,
    ) -> Result<(), TransportError> {
        let comm = self.comm.as_raw();
        // Receives first, so an arriving message finds its buffer posted.
        for r in recvs.iter_mut() {
            for p in pieces(r.data.len(), self.eager_bytes) {
                let piece = &mut r.data[p];
                // SAFETY: RSMPI_REQUEST_NULL and RSMPI_UINT8_T are constants
                // of the MPI library; `piece` stays borrowed until the caller
                // has completed the request.
                let code = unsafe {
                    let mut req = ffi::RSMPI_REQUEST_NULL;
                    let code = ffi::MPI_Irecv(
                        piece.as_mut_ptr() as *mut c_void,
                        piece.len() as c_int,
                        ffi::RSMPI_UINT8_T,
                        r.peer as c_int,
                        r.tag as c_int,
                        comm,
                        &mut req,
                    );
                    if code == SUCCESS {
                        requests.push(req);
                    }
                    code
                };
                self.check(code, "MPI_Irecv", r.peer, r.tag)?;
                posted.push(Posted {
                    call: "MPI_Irecv, completed by MPI_Waitall,",
                    peer: r.peer,
                    tag: r.tag,
                });
            }
        }
        for s in sends {
            for p in pieces(s.data.len(), self.eager_bytes) {
                let piece = &s.data[p];
                // SAFETY: as for the receives.
                let code = unsafe {
                    let mut req = ffi::RSMPI_REQUEST_NULL;
                    let code = ffi::MPI_Isend(
                        piece.as_ptr() as *const c_void,
                        piece.len() as c_int,
                        ffi::RSMPI_UINT8_T,
                        s.peer as c_int,
                        s.tag as c_int,
                        comm,
                        &mut req,
                    );
                    if code == SUCCESS {
                        requests.push(req);
                    }
                    code
                };
                self.check(code, "MPI_Isend", s.peer, s.tag)?;
                posted.push(Posted {
                    call: "MPI_Isend, completed by MPI_Waitall,",
                    peer: s.peer,
                    tag: s.tag,
                });
            }
        }
        Ok(())
    }

    /// Completes every request, even after a failure: MPI may write into a
    /// receive buffer until its request completes. Returns the first error.
    fn wait_all(
        &self,
        requests: &mut [ffi::MPI_Request],
        statuses: &mut Vec<ffi::MPI_Status>,
        posted: &[Posted],
    ) -> Result<(), TransportError> {
        statuses.clear();
        if requests.is_empty() {
            return Ok(());
        }
        // SAFETY: a zeroed MPI_Status is a valid value of that plain C struct.
        statuses.resize_with(requests.len(), || unsafe { std::mem::zeroed() });
        // SAFETY: `requests` and `statuses` have the same length.
        let code = unsafe {
            ffi::MPI_Waitall(
                requests.len() as c_int,
                requests.as_mut_ptr(),
                statuses.as_mut_ptr(),
            )
        };
        if code == SUCCESS {
            return Ok(());
        }
        let failed = (code == ERR_IN_STATUS)
            .then(|| {
                statuses
                    .iter()
                    .position(|s| s.MPI_ERROR != SUCCESS && s.MPI_ERROR != ERR_PENDING)
            })
            .flatten();
        let first = match failed {
            Some(i) => {
                let p = posted[i];
                self.check(statuses[i].MPI_ERROR, p.call, p.peer, p.tag)
            }
            None => {
                let p = posted[0];
                self.check(code, "MPI_Waitall", p.peer, p.tag)
            }
        };
        // Requests MPI completed are freed, or at least done; wait on the
        // rest one by one (a request that never completes is the watchdog's).
        for (i, p) in posted.iter().enumerate() {
            let done = code == ERR_IN_STATUS && statuses[i].MPI_ERROR != ERR_PENDING;
            let req = &mut requests[i];
            // SAFETY: `req` is a request of this call or the null request;
            // MPI_Wait completes and frees it, MPI_Request_free frees one
            // that has completed.
            let (call, code) = unsafe {
                if *req == ffi::RSMPI_REQUEST_NULL {
                    continue;
                }
                if done {
                    ("MPI_Request_free", ffi::MPI_Request_free(req))
                } else {
                    ("MPI_Wait", ffi::MPI_Wait(req, ffi::RSMPI_STATUS_IGNORE))
                }
            };
            if let Err(e) = self.check(code, call, p.peer, p.tag) {
                log::warn!("after an earlier MPI error: {e}");
            }
        }
        first
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
        let mut posted = self.posted.borrow_mut();
        requests.clear();
        posted.clear();
        // SAFETY: every request posted is completed by `wait_all` below,
        // before this function returns and the buffers' borrows end.
        let posting = unsafe { self.post(sends, recvs, &mut requests, &mut posted) };
        if posting.is_ok() {
            if let Some(work) = overlap {
                work();
            }
        }
        let waited = self.wait_all(&mut requests, &mut statuses, &posted);
        posting?;
        waited?;
        let mut i = 0;
        for r in recvs.iter() {
            for p in pieces(r.data.len(), self.eager_bytes) {
                self.check_count(&statuses[i], r, p)?;
                i += 1;
            }
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
