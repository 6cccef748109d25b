//! `mpinfer env`: what the job looks like from each rank: which launcher
//! started it, where each rank runs, and what it will compute on.

use crate::job::Job;
use crate::launch::{launcher, launcher_local_rank, mpi_library};
use anyhow::Result;
use mpinfer_collectives::Opts;

fn host() -> String {
    mpi::environment::processor_name().unwrap_or_else(|_| "?".into())
}

/// `mpinfer env`: one line per rank, printed by rank 0.
pub fn run(
    job: &Job,
    device: mpinfer_kernels::DeviceRequest,
    threads: Option<usize>,
) -> Result<()> {
    let comm = job.communicator()?;
    let threads = threads.unwrap_or_else(|| job.default_threads());
    let device = match mpinfer_kernels::device::choose(device, job.local_rank()) {
        Ok((d, why)) => format!("{d:?} ({why})"),
        Err(e) => format!("error: {}", e.chain()),
    };
    let (how, _) = launcher();
    let said = match launcher_local_rank() {
        Some((var, r)) if r != job.local_rank() => format!(" ({var}={r} disagrees)"),
        _ => String::new(),
    };
    let line = format!(
        "{:<5} {:<11} {:<16} {:<8} {how}; {device}",
        job.rank(),
        format!("{} of {}{said}", job.local_rank(), job.local_size()),
        host(),
        threads,
    );
    let mine = line.into_bytes();
    let p = job.size();
    let mut lens = vec![0i64; p];
    comm.allgather(&mut lens, Opts::default().send(&[mine.len() as i64]))?;
    let counts: Vec<usize> = lens.iter().map(|&l| l as usize).collect();
    let mut all = vec![
        0u8;
        if job.rank() == 0 {
            counts.iter().sum()
        } else {
            0
        }
    ];
    comm.gather(&mine, &mut all, Opts::default().counts(&counts))?;
    if job.rank() == 0 {
        println!("MPI: {}; {p} ranks", mpi_library());
        println!(
            "{:<5} {:<11} {:<16} {:<8} launcher; device",
            "rank", "local rank", "host", "threads"
        );
        let mut at = 0;
        for c in counts {
            println!("{}", String::from_utf8_lossy(&all[at..at + c]));
            at += c;
        }
    }
    Ok(())
}
