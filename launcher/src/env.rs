//! What the job looks like from each rank: which launcher started it, where
//! each rank runs, and what it will compute on. `mpinfer env` prints it.

use crate::job::Job;
use anyhow::{bail, Result};

/// The launcher, judged from the variables it leaves in each process's
/// environment, and the number of processes it says it started.
pub fn launcher() -> (String, Option<usize>) {
    let var = |k: &str| std::env::var(k).ok();
    let num = |k: &str| var(k).and_then(|v| v.parse::<usize>().ok());
    if let Some(n) = num("OMPI_COMM_WORLD_SIZE") {
        let how = if var("SLURM_STEP_ID").is_some() {
            "Open MPI mpirun inside SLURM"
        } else {
            "Open MPI mpirun"
        };
        return (how.into(), Some(n));
    }
    if let Some(n) = num("SLURM_STEP_NUM_TASKS").filter(|_| var("SLURM_PROCID").is_some()) {
        return ("SLURM srun".into(), Some(n));
    }
    if let Some(n) = num("PMI_SIZE") {
        return ("MPICH (Hydra mpiexec)".into(), Some(n));
    }
    if let Some(n) = num("PMIX_SIZE") {
        return ("a PMIx launcher".into(), Some(n));
    }
    ("none (a single process)".into(), None)
}

/// The local rank the launcher announced, and the variable it came in.
pub fn launcher_local_rank() -> Option<(&'static str, usize)> {
    [
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "MPI_LOCALRANKID",
        "PMI_LOCAL_RANK",
        "SLURM_LOCALID",
    ]
    .into_iter()
    .find_map(|k| Some((k, std::env::var(k).ok()?.parse().ok()?)))
}

/// The MPI library this binary is linked against, first line.
pub fn mpi_library() -> String {
    mpi::environment::library_version()
        .ok()
        .and_then(|v| {
            v.lines().next().map(|l| {
                l.trim_matches(|c: char| c == '\0' || c.is_whitespace())
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
        })
        .unwrap_or_else(|| "unknown MPI".into())
}

/// A binary built for one MPI and started by another's launcher runs as
/// many independent one-rank jobs, each redoing all the work without a
/// word. Refuse that.
pub fn check_launch(world_size: usize) -> Result<()> {
    let (how, started) = launcher();
    if let Some(n) = started.filter(|&n| n > 1 && world_size == 1) {
        let hint = if how == "SLURM srun" {
            "add --mpi=pmix to srun (or use the MPI's own mpirun inside the allocation)"
        } else {
            "start it with the mpirun of the MPI it was built for, or rebuild it against this launcher's MPI (MPICC=...)"
        };
        bail!(
            "{how} started {n} processes but MPI sees each as a job of 1 rank: this mpinfer is built against {}; {hint}",
            mpi_library()
        );
    }
    Ok(())
}

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
        Err(e) => format!("error: {e}"),
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
    comm.allgather(&[mine.len() as i64], &mut lens)?;
    let counts: Vec<usize> = lens.iter().map(|&l| l as usize).collect();
    let mut all = vec![
        0u8;
        if job.rank() == 0 {
            counts.iter().sum()
        } else {
            0
        }
    ];
    comm.gatherv(&mine, &mut all, &counts, 0)?;
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
