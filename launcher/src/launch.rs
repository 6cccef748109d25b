//! Which launcher started this process and what it announced (process
//! count, local rank), and the refusal of a launch that MPI cannot see as
//! one job.

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
