//! Check mode: ranks that disagree about the next collective get an error
//! naming both sides, not a hang or corrupted data.

use mpinfer_collectives::*;
use std::time::Duration;

fn checked(t: LocalTransport) -> Communicator<LocalTransport> {
    Communicator::new(
        t,
        Config {
            check: true,
            ..Config::default()
        },
    )
}

/// Ranks not next to the disagreement would wait for the collective; a short
/// receive timeout turns that into an error for the test.
fn run_short<R: Send>(p: usize, f: impl Fn(LocalTransport) -> R + Sync) -> Vec<R> {
    LocalWorld::run_with_timeout(p, Duration::from_secs(2), f)
}

#[test]
fn matching_calls_pass_the_check() {
    let out = LocalWorld::run(3, |t| {
        let c = checked(t);
        let mut v = vec![c.rank() as i64; 10];
        c.allreduce(&mut v, ReduceOp::Sum, Opts::default()).unwrap();
        c.barrier().unwrap();
        (v[0], c.sequence())
    });
    assert_eq!(out, vec![(3, 2); 3]);
}

#[test]
fn a_different_count_is_reported_with_both_ranks() {
    let out = run_short(3, |t| {
        let c = checked(t);
        let n = if c.rank() == 1 { 10 } else { 11 };
        let mut v = vec![1.0f32; n];
        c.allreduce(&mut v, ReduceOp::Sum, Opts::default())
            .map_err(|e| e.to_string())
    });
    for (rank, r) in out.iter().enumerate() {
        let e = r.as_ref().unwrap_err();
        assert!(e.contains("collective mismatch"), "rank {rank}: {e}");
        assert!(
            e.contains("count 10") && e.contains("count 11"),
            "rank {rank}: {e}"
        );
    }
}

#[test]
fn a_different_collective_or_root_is_reported() {
    let out = run_short(2, |t| {
        let c = checked(t);
        let mut v = vec![0u8; 4];
        let r = if c.rank() == 0 {
            c.broadcast(&mut v, Opts::default().root(0))
        } else {
            c.broadcast(&mut v, Opts::default().root(1))
        };
        r.map_err(|e| e.to_string())
    });
    let e = out[0].as_ref().unwrap_err();
    assert!(e.contains("root 0") && e.contains("root 1"), "{e}");

    let out = run_short(2, |t| {
        let c = checked(t);
        let mut v = vec![0f64; 4];
        let r = if c.rank() == 0 {
            c.allreduce(&mut v, ReduceOp::Max, Opts::default())
        } else {
            c.reduce(&mut v, ReduceOp::Max, Opts::default())
        };
        r.map_err(|e| e.to_string())
    });
    let e = out[1].as_ref().unwrap_err();
    assert!(
        e.contains("rank 1 called reduce") && e.contains("rank 0 called allreduce"),
        "{e}"
    );
}

#[test]
fn a_rank_one_call_ahead_is_reported_by_sequence_number() {
    let out = run_short(2, |t| {
        let c = checked(t);
        if c.rank() == 0 {
            c.barrier().unwrap_err();
        }
        let mut v = vec![1i32; 8];
        c.allreduce(&mut v, ReduceOp::Sum, Opts::default())
            .map_err(|e| e.to_string())
    });
    // Rank 1's allreduce #0 meets rank 0's barrier #0.
    let e = out[1].as_ref().unwrap_err();
    assert!(
        e.contains("allreduce #0") && e.contains("barrier #0"),
        "{e}"
    );
}

#[test]
fn without_check_mode_no_signature_travels() {
    let out = LocalWorld::run(2, |t| {
        let c = Communicator::new(Counting::new(t), Config::default());
        c.barrier().unwrap();
        c.transport().bytes_sent()
    });
    assert_eq!(out, vec![0, 0]);
}

#[test]
fn a_message_of_the_wrong_length_is_an_error_naming_both_ranks() {
    let out = LocalWorld::run(2, |t| {
        if t.rank() == 0 {
            t.send(1, 7, &[1, 2, 3]).map_err(|e| e.to_string())
        } else {
            let mut buf = [0u8; 4];
            t.recv(0, 7, &mut buf).map_err(|e| e.to_string())
        }
    });
    assert!(out[0].is_ok());
    let e = out[1].as_ref().unwrap_err();
    assert!(
        e.contains("rank 1: message from rank 0 (tag 7) has 3 bytes, expected 4"),
        "{e}"
    );
}
