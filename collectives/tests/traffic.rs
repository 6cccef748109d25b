//! Bytes and rounds each algorithm costs, counted on the wire, against the
//! bounds of its cost model.

use mpinfer_collectives::*;

/// Unsegmented, so that one algorithmic step is one round on the wire.
fn counted(t: LocalTransport) -> Communicator<Counting<LocalTransport>> {
    let mut config = Config::default();
    config.tuning.segment_bytes = 1 << 40;
    Communicator::new(Counting::new(t), config)
}

/// Bytes each rank sends for one allreduce of `n` f32 with `algo`, and its rounds.
fn allreduce_traffic(p: usize, n: usize, algo: AllreduceAlgo) -> Vec<(u64, u64)> {
    LocalWorld::run(p, |t| {
        let c = counted(t);
        let mut v = vec![1.0f32; n];
        c.allreduce(&mut v, ReduceOp::Sum, Opts::default().algorithm(algo))
            .unwrap();
        assert!(v.iter().all(|x| *x == p as f32));
        (c.transport().bytes_sent(), c.transport().rounds())
    })
}

fn log2_ceil(p: usize) -> u64 {
    (usize::BITS - (p - 1).leading_zeros()) as u64
}

#[test]
fn ring_traffic_goes_to_the_right_neighbour_only() {
    let p = 5;
    let n = 1000;
    let per_rank = LocalWorld::run(p, |t| {
        let c = counted(t);
        let mut v = vec![1i32; n];
        let ring = Opts::default().algorithm(AllreduceAlgo::Ring);
        c.allreduce(&mut v, ReduceOp::Sum, ring).unwrap();
        (c.rank(), c.transport().per_peer())
    });
    for (rank, peers) in per_rank {
        for (peer, t) in peers.iter().enumerate() {
            let right = peer == (rank + 1) % p;
            let left = peer == (rank + p - 1) % p;
            assert_eq!(
                t.messages_sent > 0,
                right,
                "rank {rank} sent to {peer}: {t:?}"
            );
            assert_eq!(
                t.messages_received > 0,
                left,
                "rank {rank} heard from {peer}: {t:?}"
            );
        }
        // 2(p-1) steps of one block each, 200 elements of 4 bytes.
        assert_eq!(
            peers[(rank + 1) % p].bytes_sent,
            (2 * (p - 1) * 200 * 4) as u64
        );
    }
}

#[test]
fn ring_allreduce_sends_the_bandwidth_lower_bound() {
    let n = 1 << 18;
    for p in 2..=9 {
        let bound = 2.0 * (p as f64 - 1.0) / p as f64 * (4 * n) as f64;
        for (rank, (sent, rounds)) in allreduce_traffic(p, n, AllreduceAlgo::Ring)
            .into_iter()
            .enumerate()
        {
            // Uneven blocks add at most one element per step.
            let slack = (2 * (p - 1) * 4) as f64;
            assert!(
                sent as f64 <= bound + slack,
                "p={p} rank {rank}: sent {sent} > {bound}"
            );
            assert!(
                sent as f64 >= bound - slack,
                "p={p} rank {rank}: sent {sent}, less than the lower bound {bound}"
            );
            assert!(rounds >= 2 * (p as u64 - 1));
        }
    }
}

#[test]
fn rabenseifner_sends_the_bandwidth_lower_bound_in_2_log_p_rounds() {
    let n = 1 << 18;
    for p in [2, 4, 8, 16] {
        let bound = 2.0 * (p as f64 - 1.0) / p as f64 * (4 * n) as f64;
        for (rank, (sent, rounds)) in allreduce_traffic(p, n, AllreduceAlgo::Rabenseifner)
            .into_iter()
            .enumerate()
        {
            assert!(
                sent as f64 <= bound + 64.0,
                "p={p} rank {rank}: sent {sent} > {bound}"
            );
            assert_eq!(rounds, 2 * log2_ceil(p), "p={p} rank {rank}");
        }
    }
    // Folding a non-power-of-two costs the folded pairs one extra vector each way.
    for p in [3usize, 5, 6, 7] {
        for (rank, (sent, _)) in allreduce_traffic(p, n, AllreduceAlgo::Rabenseifner)
            .into_iter()
            .enumerate()
        {
            let pof2 = 1usize << (usize::BITS - 1 - p.leading_zeros());
            let core = 2.0 * (pof2 as f64 - 1.0) / pof2 as f64 * (4 * n) as f64;
            assert!(
                sent as f64 <= core + (4 * n) as f64 + 64.0,
                "p={p} rank {rank}: sent {sent}"
            );
        }
    }
}

#[test]
fn segmenting_adds_rounds_but_not_bytes() {
    let n = 1 << 18;
    let whole = allreduce_traffic(4, n, AllreduceAlgo::RecursiveDoubling);
    let segmented = LocalWorld::run(4, |t| {
        let mut config = Config::default();
        config.tuning.segment_bytes = 64 << 10;
        let c = Communicator::new(Counting::new(t), config);
        let mut v = vec![1.0f32; n];
        let rd = Opts::default().algorithm(AllreduceAlgo::RecursiveDoubling);
        c.allreduce(&mut v, ReduceOp::Sum, rd).unwrap();
        (c.transport().bytes_sent(), c.transport().rounds())
    });
    for (w, s) in whole.iter().zip(&segmented) {
        assert_eq!(w.0, s.0);
        // 1 MiB in 64 KiB segments: 16 per step, 2 steps.
        assert_eq!((w.1, s.1), (2, 32));
    }
}

#[test]
fn recursive_doubling_takes_log_p_rounds() {
    let n = 1000;
    for p in [2, 4, 8, 16] {
        for (rank, (sent, rounds)) in allreduce_traffic(p, n, AllreduceAlgo::RecursiveDoubling)
            .into_iter()
            .enumerate()
        {
            assert_eq!(rounds, log2_ceil(p), "p={p} rank {rank}");
            assert_eq!(sent, log2_ceil(p) * 4 * n as u64, "p={p} rank {rank}");
        }
    }
    for p in [3usize, 5, 6, 7, 9] {
        let floor = (usize::BITS - 1 - p.leading_zeros()) as u64;
        for (rank, (_, rounds)) in allreduce_traffic(p, n, AllreduceAlgo::RecursiveDoubling)
            .into_iter()
            .enumerate()
        {
            assert!(rounds <= floor + 2, "p={p} rank {rank}: {rounds} rounds");
        }
    }
}

#[test]
fn allgathers_take_their_rounds_and_bytes() {
    let n = 999;
    for p in 2..=9 {
        let results = LocalWorld::run(p, |t| {
            let c = counted(t);
            let mine = vec![c.rank() as u8; n];
            let mut all = vec![0u8; n * p];
            let mut out = Vec::new();
            for &algo in AllgatherAlgo::CONCRETE {
                c.transport().reset();
                c.allgather(&mut all, Opts::default().send(&mine).algorithm(algo))
                    .unwrap();
                out.push((algo, c.transport().bytes_received(), c.transport().rounds()));
            }
            out
        });
        for (rank, per_algo) in results.iter().enumerate() {
            for &(algo, received, rounds) in per_algo {
                match algo {
                    AllgatherAlgo::Bruck => {
                        assert_eq!(rounds, log2_ceil(p), "bruck p={p} rank {rank}");
                        assert_eq!(received, ((p - 1) * n) as u64, "bruck p={p} rank {rank}");
                    }
                    AllgatherAlgo::Ring => {
                        assert_eq!(rounds, p as u64 - 1, "ring p={p} rank {rank}");
                        assert_eq!(received, ((p - 1) * n) as u64, "ring p={p} rank {rank}");
                    }
                    AllgatherAlgo::RecursiveDoubling if p.is_power_of_two() => {
                        assert_eq!(rounds, log2_ceil(p), "rd p={p} rank {rank}");
                        assert_eq!(received, ((p - 1) * n) as u64, "rd p={p} rank {rank}");
                    }
                    _ => {}
                }
            }
        }
    }
}

#[test]
fn reduce_scatter_gather_moves_less_than_a_tree_at_large_sizes() {
    let n = 1 << 16;
    let p = 8;
    let results = LocalWorld::run(p, |t| {
        let c = counted(t);
        let mut v = vec![1i32; n];
        let split = Opts::default().algorithm(ReduceAlgo::ReduceScatterGather);
        c.reduce(&mut v, ReduceOp::Sum, split).unwrap();
        let rsg = c.transport().bytes_received();
        c.transport().reset();
        let mut v = vec![1i32; n];
        let tree = Opts::default().algorithm(ReduceAlgo::Binomial);
        c.reduce(&mut v, ReduceOp::Sum, tree).unwrap();
        (rsg, c.transport().bytes_received())
    });
    // The binomial root receives the vector once per level; the ring pipeline
    // delivers about 2(p-1)/p of it.
    let (rsg, tree) = results[0];
    assert_eq!(tree, 3 * 4 * n as u64);
    assert!(rsg <= (2 * (p - 1) * 4 * n / p + 64) as u64, "{rsg}");
}
