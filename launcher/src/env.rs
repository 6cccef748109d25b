//! `mpinfer env`: what the job looks like from each rank: which launcher
//! started it, where each rank runs, what it will compute on, and the NVRTC
//! and kernel cache its CUDA kernels would use.

use crate::job::Job;
use crate::launch::{launcher, launcher_local_rank, mpi_library};
use anyhow::Result;
use mpinfer_collectives::Opts;
use mpinfer_kernels::cuda::{cache, nvrtc};

fn host() -> String {
    mpi::environment::processor_name().unwrap_or_else(|_| "?".into())
}

/// The NVRTC library this rank finds and what it compiles for, or why
/// there is none.
fn nvrtc_found() -> String {
    match nvrtc::library() {
        Ok(found) => {
            let archs: Vec<String> = found
                .architectures()
                .iter()
                .map(|a| format!("sm_{a}"))
                .collect();
            format!("{found}; compiles for {}", archs.join(" "))
        }
        Err(e) => format!("none: {}", e.chain()),
    }
}

fn cache_dir() -> String {
    match cache::dir() {
        Some(dir) => dir.display().to_string(),
        None => format!(
            "none (set {} or HOME): kernels are compiled by every process",
            cache::CACHE_ENV
        ),
    }
}

/// Prints `label: value`, or one such line per distinct value naming the
/// ranks that have it.
fn print_shared(label: &str, values: &[&str]) {
    if values.iter().all(|v| *v == values[0]) {
        println!("{label}: {}", values[0]);
        return;
    }
    let mut shown: Vec<&str> = Vec::new();
    for value in values {
        if shown.contains(value) {
            continue;
        }
        shown.push(value);
        let ranks: Vec<String> = (0..values.len())
            .filter(|&r| values[r] == *value)
            .map(|r| r.to_string())
            .collect();
        println!("{label} on ranks {}: {value}", ranks.join(", "));
    }
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
    // Fields joined by NULs, which none of them holds.
    let mine = [line, nvrtc_found(), cache_dir()].join("\0").into_bytes();
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
        let mut reports = Vec::new();
        for c in counts {
            reports.push(String::from_utf8_lossy(&all[at..at + c]).into_owned());
            at += c;
        }
        print_reports(&reports);
    }
    Ok(())
}

/// Each rank's line, then the NVRTC and cache lines they share.
fn print_reports(reports: &[String]) {
    let fields: Vec<Vec<&str>> = reports.iter().map(|r| r.split('\0').collect()).collect();
    let field = |i: usize| -> Vec<&str> {
        fields
            .iter()
            .map(|f| f.get(i).copied().unwrap_or("?"))
            .collect()
    };
    for line in field(0) {
        println!("{line}");
    }
    print_shared("NVRTC", &field(1));
    print_shared("kernel cache", &field(2));
}
