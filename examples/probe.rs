use mpi::traits::{Communicator as _, *};
use mpinfer_collectives::*;
use std::time::Instant;
fn main() {
    let u = mpi::initialize().unwrap();
    let w = u.world();
    let c = mpinfer_collectives::Communicator::new(MpiTransport::new(&w), Config::default());
    let r = w.rank() as usize;
    let n = 1 << 18;
    let a: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
    let mut b = vec![1f32; n];
    let mut half = vec![1f32; n / 2];
    let mut t = |name: &str, f: &mut dyn FnMut()| {
        for _ in 0..20 {
            f();
        }
        let mut best = f64::MAX;
        for _ in 0..5 {
            w.barrier();
            let t0 = Instant::now();
            for _ in 0..50 {
                f();
            }
            best = best.min(t0.elapsed().as_secs_f64() / 50.0 * 1e6);
        }
        if r == 0 {
            println!("{name}: {best:.1} us");
        }
    };
    t("reduce binomial", &mut || {
        c.reduce_into_with(&a, &mut b, ReduceOp::Sum, 0, ReduceAlgo::Binomial)
            .unwrap()
    });
    t("reduce rsg", &mut || {
        c.reduce_into_with(
            &a,
            &mut b,
            ReduceOp::Sum,
            0,
            ReduceAlgo::ReduceScatterGather,
        )
        .unwrap()
    });
    t("reduce_scatter", &mut || {
        c.reduce_scatter(&a, &mut half, ReduceOp::Sum).unwrap()
    });
    t("gather half", &mut || {
        c.gather(&a[..n / 2], if r == 0 { &mut b[..] } else { &mut [] }, 0)
            .unwrap()
    });
    t("mpi reduce", &mut || {
        if r == 0 {
            w.process_at_rank(0).reduce_into_root(
                &a[..],
                &mut b[..],
                mpi::collective::SystemOperation::sum(),
            )
        } else {
            w.process_at_rank(0)
                .reduce_into(&a[..], mpi::collective::SystemOperation::sum())
        }
    });
    t("allreduce", &mut || {
        c.allreduce_into(&a, &mut b, ReduceOp::Sum).unwrap()
    });
    t("mpi allreduce", &mut || {
        w.all_reduce_into(&a[..], &mut b[..], mpi::collective::SystemOperation::sum())
    });
}
