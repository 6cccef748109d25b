use mpi::traits::{Communicator as _, *};
use mpinfer_collectives::*;
use std::time::Instant;
fn main() {
    let u = mpi::initialize().unwrap();
    let w = u.world();
    let c = mpinfer_collectives::Communicator::new(MpiTransport::new(&w), Config::default());
    let r = w.rank() as usize;
    let n = 1 << 18;
    let a = vec![1f32; n];
    let mut b = vec![0f32; n];
    let mut d = vec![0f32; n];
    let t0 = Instant::now();
    for _ in 0..200 {
        f32::combine_into(ReduceOp::Sum, &mut d, &a, &b);
    }
    if r == 0 {
        println!(
            "combine_into 1MiB: {:.1} us",
            t0.elapsed().as_secs_f64() / 200.0 * 1e6
        );
    }
    let t0 = Instant::now();
    for _ in 0..200 {
        f32::combine(ReduceOp::Sum, &mut d, &a);
    }
    if r == 0 {
        println!(
            "combine 1MiB: {:.1} us",
            t0.elapsed().as_secs_f64() / 200.0 * 1e6
        );
    }
    for round in 0..2 {
        for &algo in AllreduceAlgo::CONCRETE {
            w.barrier();
            let t0 = Instant::now();
            for _ in 0..100 {
                c.allreduce_into_with(&a, &mut b, ReduceOp::Sum, algo)
                    .unwrap();
            }
            let oop = t0.elapsed().as_secs_f64() / 100.0 * 1e6;
            w.barrier();
            let t0 = Instant::now();
            for _ in 0..100 {
                c.allreduce_with(&mut b, ReduceOp::Sum, algo).unwrap();
            }
            let inp = t0.elapsed().as_secs_f64() / 100.0 * 1e6;
            w.barrier();
            let mut ours = 0.0;
            let mut theirs = 0.0;
            for _ in 0..100 {
                let t0 = Instant::now();
                c.allreduce_into_with(&a, &mut b, ReduceOp::Sum, algo)
                    .unwrap();
                ours += t0.elapsed().as_secs_f64();
                let t0 = Instant::now();
                w.all_reduce_into(&a[..], &mut d[..], mpi::collective::SystemOperation::sum());
                theirs += t0.elapsed().as_secs_f64();
            }
            if r == 0 {
                println!("round {round} {algo}: out-of-place {oop:.1} us, in place {inp:.1} us, alternating with MPI: ours {:.1} MPI {:.1}", ours / 100.0 * 1e6, theirs / 100.0 * 1e6);
            }
        }
    }
}
