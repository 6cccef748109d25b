//! Using mpinfer's collectives directly in an MPI program.
//!
//! Each rank histograms its own share of a data set, the histograms are
//! summed with an allreduce, and every rank's list of outliers (of a length
//! only that rank knows) is gathered with an uneven allgather.
//!
//! ```text
//! cargo build --release --examples
//! mpirun -n 4 target/release/examples/collectives
//! ```

use mpinfer_collectives::{AllreduceAlgo, Communicator, Config, MpiTransport, Opts, ReduceOp};

fn main() {
    let universe = mpi::initialize().expect("MPI initialises once");
    let world = universe.world();
    // Algorithm choice and checking come from MPINFER_* variables, if set.
    let config = Config::from_env().unwrap_or_else(|e| panic!("{e}"));
    let comm = Communicator::new(MpiTransport::new(&world), config);
    let (rank, ranks) = (comm.rank(), comm.size());

    // This rank's share of 100,000 samples: every ranks-th one.
    let samples: Vec<i32> = (rank as i32..100_000)
        .step_by(ranks)
        .map(|i| (i * 7919) % 1000)
        .collect();
    let mut histogram = vec![0i64; 10];
    for s in &samples {
        histogram[(*s / 100) as usize] += 1;
    }
    let ring = Opts::default().algorithm(AllreduceAlgo::Ring);
    comm.allreduce(&mut histogram, ReduceOp::Sum, ring)
        .expect("allreduce");

    // Outliers: a different number on every rank, so first agree on the counts.
    let outliers: Vec<i32> = samples.iter().copied().filter(|s| *s >= 998).collect();
    let mut counts = vec![0i64; ranks];
    counts[rank] = outliers.len() as i64;
    comm.allreduce(&mut counts, ReduceOp::Sum, Opts::default())
        .expect("allreduce of counts");
    let counts: Vec<usize> = counts.iter().map(|c| *c as usize).collect();
    let mut all_outliers = vec![0i32; counts.iter().sum()];
    comm.allgather(
        &mut all_outliers,
        Opts::default().send(&outliers).counts(&counts),
    )
    .expect("allgather of outliers");

    assert_eq!(
        histogram.iter().sum::<i64>(),
        100_000,
        "every sample counted once"
    );
    if rank == 0 {
        println!("{ranks} ranks: histogram {histogram:?}");
        println!("{} outliers, per rank {counts:?}", all_outliers.len());
    }
}
