//! Ranks as threads of one process: exhaustive tests and single-process runs.

use super::{check_peer, Incoming, Outgoing, Tag, Transport, TransportError};
use crate::watchdog::Watchdog;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Messages waiting for one destination rank, keyed by (source, tag) so that
/// order between one pair on one tag is preserved, as MPI guarantees.
type Queues = HashMap<(usize, Tag), VecDeque<Vec<u8>>>;

#[derive(Default)]
struct Mailbox {
    queues: Mutex<Queues>,
    arrived: Condvar,
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// The shared state of one group of local ranks.
pub struct LocalWorld {
    mailboxes: Vec<Mailbox>,
    timeout: Duration,
}

impl LocalWorld {
    pub fn new(size: usize) -> Arc<LocalWorld> {
        Self::with_timeout(size, DEFAULT_TIMEOUT)
    }

    /// A receive that waits longer than `timeout` fails instead of hanging the
    /// test that exposed a mismatched algorithm.
    pub fn with_timeout(size: usize, timeout: Duration) -> Arc<LocalWorld> {
        assert!(size > 0, "a world has at least one rank");
        Arc::new(LocalWorld {
            mailboxes: (0..size).map(|_| Mailbox::default()).collect(),
            timeout,
        })
    }

    pub fn size(&self) -> usize {
        self.mailboxes.len()
    }

    pub fn transport(self: &Arc<Self>, rank: usize) -> LocalTransport {
        assert!(rank < self.size());
        LocalTransport {
            rank,
            world: Arc::clone(self),
            watchdog: Watchdog::new(),
        }
    }

    /// Runs `f` once per rank, each on its own thread, and returns the results
    /// in rank order. A panic on any rank is propagated.
    pub fn run<R: Send>(size: usize, f: impl Fn(LocalTransport) -> R + Sync) -> Vec<R> {
        Self::run_with_timeout(size, DEFAULT_TIMEOUT, f)
    }

    /// [`LocalWorld::run`] with a receive timeout of its own.
    pub fn run_with_timeout<R: Send>(
        size: usize,
        timeout: Duration,
        f: impl Fn(LocalTransport) -> R + Sync,
    ) -> Vec<R> {
        let world = LocalWorld::with_timeout(size, timeout);
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..size)
                .map(|rank| {
                    let t = world.transport(rank);
                    let f = &f;
                    s.spawn(move || f(t))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        })
    }
}

pub struct LocalTransport {
    rank: usize,
    world: Arc<LocalWorld>,
    watchdog: Watchdog,
}

impl LocalTransport {
    fn deliver(&self, peer: usize, tag: Tag, data: &[u8]) {
        let mailbox = &self.world.mailboxes[peer];
        let mut queues = mailbox.queues.lock().unwrap();
        queues
            .entry((self.rank, tag))
            .or_default()
            .push_back(data.to_vec());
        mailbox.arrived.notify_all();
    }

    fn take(&self, peer: usize, tag: Tag, out: &mut [u8]) -> Result<(), TransportError> {
        let mailbox = &self.world.mailboxes[self.rank];
        let deadline = Instant::now() + self.world.timeout;
        let _waiting = self.watchdog.waiting(peer, tag);
        let mut queues = mailbox.queues.lock().unwrap();
        loop {
            if let Some(msg) = queues.get_mut(&(peer, tag)).and_then(|q| q.pop_front()) {
                if msg.len() != out.len() {
                    return Err(TransportError::LengthMismatch {
                        rank: self.rank,
                        peer,
                        tag,
                        expected: out.len(),
                        got: msg.len(),
                    });
                }
                out.copy_from_slice(&msg);
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(TransportError::Timeout {
                    rank: self.rank,
                    peer,
                    tag,
                    seconds: self.world.timeout.as_secs(),
                });
            }
            queues = mailbox
                .arrived
                .wait_timeout(queues, deadline - now)
                .unwrap()
                .0;
        }
    }
}

impl Transport for LocalTransport {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.world.size()
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
            check_peer(self.rank, self.size(), s.peer)?;
            self.deliver(s.peer, s.tag, s.data);
        }
        if let Some(work) = overlap {
            work();
        }
        for r in recvs.iter_mut() {
            check_peer(self.rank, self.size(), r.peer)?;
            self.take(r.peer, r.tag, r.data)?;
        }
        Ok(())
    }
}
