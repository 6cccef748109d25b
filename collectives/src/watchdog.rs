//! Ends a wait that makes no progress. A rank stuck in a receive whose
//! sender hangs, or whose sender called a different collective, would sit
//! there until the job's wall-clock limit; instead a monitor thread notices
//! that the same wait has lasted longer than the timeout and reports which
//! rank it waited on, in which collective.
//!
//! Every communicator has its own [`Watchdog`] and hands a clone to its
//! transport, which marks each wait on it. The wait path only bumps a
//! counter and stores what it waits on (a few nanoseconds: small collectives
//! take under a microsecond); the monitor samples that state and measures
//! the time itself.

use crate::tags::{self, Tag};
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

/// One communicator's waits, as its transport reports them. Clones share
/// the state; an unarmed watchdog costs its transport one load per wait.
#[derive(Clone, Debug, Default)]
pub struct Watchdog {
    state: Arc<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Bumped at the start and at the end of every wait; odd while waiting.
    epoch: AtomicU64,
    peer: AtomicUsize,
    tag: AtomicU16,
    /// Sequence number of the collective under way.
    seq: AtomicU64,
    /// 0: not armed.
    timeout_ms: AtomicU64,
    monitor: OnceLock<()>,
}

/// Marks a wait until dropped.
#[must_use = "the wait ends when this is dropped"]
pub struct Waiting<'a>(&'a State);

impl Drop for Waiting<'_> {
    #[inline]
    fn drop(&mut self) {
        self.0.epoch.fetch_add(1, Ordering::Release);
    }
}

impl Watchdog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks a wait on `peer` for a message tagged `tag`, until the guard is
    /// dropped. `None` (and nothing recorded) while the watchdog is not armed.
    #[inline]
    pub fn waiting(&self, peer: usize, tag: Tag) -> Option<Waiting<'_>> {
        let s = &*self.state;
        if s.timeout_ms.load(Ordering::Relaxed) == 0 {
            return None;
        }
        s.peer.store(peer, Ordering::Relaxed);
        s.tag.store(tag, Ordering::Relaxed);
        s.epoch.fetch_add(1, Ordering::Release);
        Some(Waiting(s))
    }

    #[inline]
    pub(crate) fn set_sequence(&self, seq: u64) {
        self.state.seq.store(seq, Ordering::Relaxed);
    }

    /// Starts watching: a wait that lasts longer than `timeout` calls
    /// `expire` with a description naming `rank`, the peer, the collective
    /// and its sequence number. `expire` is expected to end the job. Later
    /// calls only change the timeout; a zero timeout turns the watch off.
    /// The monitor thread ends once every clone of this watchdog is gone.
    pub fn arm(&self, timeout: Duration, rank: usize, expire: impl Fn(String) + Send + 'static) {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        // A timeout under a millisecond still has to arm.
        let ms = if timeout.is_zero() { 0 } else { ms.max(1) };
        self.state.timeout_ms.store(ms, Ordering::Relaxed);
        self.state.monitor.get_or_init(|| {
            let state = Arc::downgrade(&self.state);
            std::thread::Builder::new()
                .name(format!("mpinfer-watchdog-{rank}"))
                .spawn(move || monitor(state, rank, expire))
                .expect("start the watchdog thread");
        });
    }
}

fn monitor(state: Weak<State>, rank: usize, expire: impl Fn(String)) {
    let mut seen = (u64::MAX, Instant::now());
    loop {
        let Some(s) = state.upgrade() else { return };
        let limit = Duration::from_millis(s.timeout_ms.load(Ordering::Relaxed));
        let nap = if limit.is_zero() {
            Duration::from_secs(1)
        } else {
            (limit / 8).clamp(Duration::from_millis(10), Duration::from_secs(1))
        };
        // Not held while asleep, so dropping the communicator ends the thread.
        drop(s);
        std::thread::sleep(nap);
        let Some(s) = state.upgrade() else { return };
        let epoch = s.epoch.load(Ordering::Acquire);
        if epoch.is_multiple_of(2) || limit.is_zero() {
            seen = (u64::MAX, Instant::now());
            continue;
        }
        if epoch != seen.0 {
            seen = (epoch, Instant::now());
            continue;
        }
        let waited = seen.1.elapsed();
        if waited >= limit {
            expire(report(&s, rank, waited));
            seen = (u64::MAX, Instant::now());
        }
    }
}

fn report(s: &State, rank: usize, waited: Duration) -> String {
    let peer = s.peer.load(Ordering::Relaxed);
    format!(
        "rank {rank}: no progress for {} s waiting for rank {peer} in {} (collective #{}); rank {peer} is stuck, slower than the timeout allows (--timeout / MPINFER_TIMEOUT), or gone",
        waited.as_secs(),
        tags::describe(s.tag.load(Ordering::Relaxed)),
        s.seq.load(Ordering::Relaxed),
    )
}
