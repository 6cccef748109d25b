//! Ends a wait that makes no progress. A rank stuck in a receive whose
//! sender hangs, or whose sender called a different collective, would sit
//! there until the job's wall-clock limit; instead a monitor thread notices
//! that the same wait has lasted longer than the timeout and reports which
//! rank it waited on, in which collective.
//!
//! The wait path only bumps a counter and stores what it waits on (a few
//! nanoseconds: small collectives take under a microsecond); the monitor
//! samples that state and measures the time itself.

use crate::check::Collective;
use crate::transport::Tag;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Bumped at the start of every wait; odd while waiting.
static EPOCH: AtomicU64 = AtomicU64::new(0);
static PEER: AtomicUsize = AtomicUsize::new(0);
static TAG: AtomicU32 = AtomicU32::new(0);
/// Sequence number of the collective under way.
static SEQ: AtomicU64 = AtomicU64::new(0);
static ARMED: AtomicBool = AtomicBool::new(false);
static MONITOR: OnceLock<()> = OnceLock::new();

/// Marks a wait on `peer` for a message tagged `tag`, until dropped.
pub(crate) struct Waiting;

#[inline]
pub(crate) fn waiting(peer: usize, tag: Tag) -> Option<Waiting> {
    if !ARMED.load(Ordering::Relaxed) {
        return None;
    }
    PEER.store(peer, Ordering::Relaxed);
    TAG.store(tag as u32, Ordering::Relaxed);
    EPOCH.fetch_add(1, Ordering::Release);
    Some(Waiting)
}

impl Drop for Waiting {
    #[inline]
    fn drop(&mut self) {
        EPOCH.fetch_add(1, Ordering::Release);
    }
}

#[inline]
pub(crate) fn set_sequence(seq: u64) {
    SEQ.store(seq, Ordering::Relaxed);
}

/// What a message with this tag belongs to.
fn activity(tag: u32) -> String {
    match Collective::from_tag(tag) {
        Some(c) => c.name().to_string(),
        None if tag == crate::comm::TAG_CHECK as u32 => "a collective signature check".into(),
        None => format!("a point-to-point message (tag {tag})"),
    }
}

/// Starts watching this process's waits: one that lasts longer than
/// `timeout` calls `expire` with a description naming `rank`, the peer and
/// the collective. `expire` is expected to end the job. Later calls only
/// change the timeout; a zero timeout turns the watch off.
pub fn arm(timeout: Duration, rank: usize, expire: impl Fn(String) + Send + 'static) {
    static TIMEOUT_MS: AtomicU64 = AtomicU64::new(0);
    TIMEOUT_MS.store(timeout.as_millis() as u64, Ordering::Relaxed);
    ARMED.store(!timeout.is_zero(), Ordering::Relaxed);
    MONITOR.get_or_init(|| {
        std::thread::Builder::new()
            .name("mpinfer-watchdog".into())
            .spawn(move || {
                let mut seen = (u64::MAX, Instant::now());
                loop {
                    let limit = Duration::from_millis(TIMEOUT_MS.load(Ordering::Relaxed));
                    std::thread::sleep((limit / 8).clamp(Duration::from_millis(10), Duration::from_secs(1)));
                    let epoch = EPOCH.load(Ordering::Acquire);
                    if epoch.is_multiple_of(2) || !ARMED.load(Ordering::Relaxed) {
                        seen = (u64::MAX, Instant::now());
                        continue;
                    }
                    if epoch != seen.0 {
                        seen = (epoch, Instant::now());
                        continue;
                    }
                    let waited = seen.1.elapsed();
                    if waited >= limit {
                        let peer = PEER.load(Ordering::Relaxed);
                        expire(format!(
                            "rank {rank}: no progress for {} s waiting for rank {peer} in {} (collective #{}); rank {peer} is stuck, slower than the timeout allows (--timeout / MPINFER_TIMEOUT), or gone",
                            waited.as_secs(),
                            activity(TAG.load(Ordering::Relaxed)),
                            SEQ.load(Ordering::Relaxed),
                        ));
                        seen = (u64::MAX, Instant::now());
                    }
                }
            })
            .expect("start the watchdog thread");
    });
}
