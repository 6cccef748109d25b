//! The watchdog of one communicator reports a wait that outlasts its
//! timeout, naming the rank, the peer, the collective and its sequence
//! number; reserved tags keep the caller's own messages apart from the
//! collectives'.

use mpinfer_collectives::*;
use std::sync::mpsc;
use std::time::Duration;

const LATE: Duration = Duration::from_millis(800);
const TIMEOUT: Duration = Duration::from_millis(150);

/// Rank 0 arms its watchdog and enters `stuck` on rank 1, which joins
/// `LATE`; returns every report rank 0's watchdog made.
fn reports_while(stuck: impl Fn(&Communicator<LocalTransport>) + Sync) -> Vec<String> {
    let (tx, rx) = mpsc::channel();
    LocalWorld::run(2, |t| {
        let c = Communicator::new(t, Config::default());
        let mut v = [1i32; 4];
        c.allreduce(&mut v, ReduceOp::Sum, Opts::default()).unwrap();
        if c.rank() == 0 {
            let tx = tx.clone();
            c.watch(TIMEOUT, move |what| {
                let _ = tx.send(what);
            });
        } else {
            std::thread::sleep(LATE);
        }
        stuck(&c);
    });
    drop(tx);
    rx.try_iter().collect()
}

#[test]
fn a_late_rank_is_named_with_the_collective_and_its_number() {
    let reports = reports_while(|c| {
        let mut v = [0f32; 16];
        c.broadcast(&mut v, Opts::default().root(1)).unwrap();
    });
    assert!(!reports.is_empty(), "no report of a wait of {LATE:?}");
    for r in &reports {
        assert!(
            r.starts_with("rank 0: no progress for ")
                && r.contains("waiting for rank 1 in broadcast (collective #1)"),
            "{r}"
        );
    }
}

#[test]
fn a_late_message_on_a_reserved_tag_is_named_as_such() {
    let reports = reports_while(|c| {
        let tag = c.reserve_tags(1).unwrap().get(0);
        let mut buf = [0u8; 8];
        if c.rank() == 0 {
            c.transport().recv(1, tag, &mut buf).unwrap();
        } else {
            c.transport().send(0, tag, &buf).unwrap();
        }
    });
    assert!(!reports.is_empty(), "no report of a wait of {LATE:?}");
    let want = format!(
        "waiting for rank 1 in a point-to-point message (reserved tag {})",
        tags::RESERVABLE.start()
    );
    assert!(reports.iter().all(|r| r.contains(&want)), "{reports:?}");
}

#[test]
fn an_unarmed_or_disarmed_watchdog_stays_quiet() {
    let (tx, rx) = mpsc::channel::<String>();
    LocalWorld::run(2, |t| {
        let c = Communicator::new(t, Config::default());
        if c.rank() == 0 {
            let tx = tx.clone();
            c.watch(TIMEOUT, move |what| {
                let _ = tx.send(what);
            });
            c.watch(Duration::ZERO, |_| {
                unreachable!("only the first expire is kept")
            });
        } else {
            std::thread::sleep(LATE);
        }
        c.barrier().unwrap();
    });
    drop(tx);
    let reports: Vec<String> = rx.try_iter().collect();
    assert!(reports.is_empty(), "{reports:?}");
}

#[test]
fn reserved_tags_agree_across_ranks_and_do_not_meet_collective_traffic() {
    let out = LocalWorld::run(3, |t| {
        let c = Communicator::new(t, Config::default());
        let first = c.reserve_tags(2).unwrap();
        let second = c.reserve_tags(3).unwrap();
        let (rank, p) = (c.rank(), c.size());
        // A message on a reserved tag sent before a collective and received
        // after it must not be taken by the collective, nor disturb it.
        let note = [rank as u8; 5];
        c.transport()
            .send((rank + 1) % p, second.get(2), &note)
            .unwrap();
        let mut v = vec![rank as i64 + 1; 100];
        c.allreduce(&mut v, ReduceOp::Sum, Opts::default()).unwrap();
        let mut got = [0u8; 5];
        c.transport()
            .recv((rank + p - 1) % p, second.get(2), &mut got)
            .unwrap();
        (first, second, v[0], got[0])
    });
    for (rank, (first, second, sum, from)) in out.iter().enumerate() {
        assert_eq!(*first, out[0].0, "rank {rank}");
        assert_eq!(*second, out[0].1, "rank {rank}");
        assert!(first.iter().all(|t| !second.contains(t)));
        assert!(first
            .iter()
            .chain(second.iter())
            .all(|t| tags::RESERVABLE.contains(&t)));
        assert_eq!(*sum, 6);
        assert_eq!(usize::from(*from), (rank + 2) % 3);
    }
}
