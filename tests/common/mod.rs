//! Starting `mpirun` from the multi-rank tests: Open MPI's or MPICH's (the
//! `MPIRUN` variable), as root, with more ranks than cores, never hanging.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct Outcome {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    pub timed_out: bool,
}

/// Once the first returns true (polled every 10 ms), call the second with
/// mpirun's process id.
pub type During<'a> = (&'a dyn Fn() -> bool, &'a dyn Fn(u32));

pub fn is_mpich(launcher: &str) -> bool {
    launcher.contains("mpich") || launcher.contains("hydra")
}

/// `mpirun ARGS` with extra environment, ended after `limit`.
pub fn mpirun(
    args: &[String],
    env: &[(&str, &str)],
    limit: Duration,
    during: Option<During>,
) -> Outcome {
    let mpirun = std::env::var("MPIRUN").unwrap_or_else(|_| "mpirun".into());
    let mut cmd = Command::new(&mpirun);
    // Only Open MPI's mpirun knows (and needs) this flag.
    if !is_mpich(&mpirun) {
        cmd.arg("--oversubscribe");
    }
    cmd.args(args)
        .envs(env.iter().copied())
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_rmaps_base_oversubscribe", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .expect("cannot start mpirun: is Open MPI installed (scripts/setup.sh)?");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let mut timed_out = false;
    let mut during = during;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait on mpirun") {
            break Some(s);
        }
        if let Some((ready, act)) = during {
            if ready() {
                act(child.id());
                during = None;
            }
        }
        if start.elapsed() > limit {
            timed_out = true;
            // SIGTERM first: mpirun forwards it to its ranks, where SIGKILL
            // would leave them running.
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            std::thread::sleep(Duration::from_secs(2));
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Outcome {
        code: status.and_then(|s| s.code()),
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
        elapsed: start.elapsed(),
        timed_out,
    }
}

/// Runs `tests/SCRIPT` (which writes models, inputs and their ONNX Runtime
/// outputs into `models`, and `manifest.json` describing them) with
/// `args`, and returns the manifest's text. The Python is `MPINFER_PYTHON`,
/// else the workspace's `.venv`.
#[allow(dead_code)] // the collectives' tests make no models
pub fn make_models(script: &str, models: &std::path::Path, args: &[&str]) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var("MPINFER_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| root.join(".venv/bin/python"));
    let made = Command::new(&python)
        .arg(root.join("tests").join(script))
        .arg(models)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e} (scripts/setup.sh makes the venv)",
                python.display()
            )
        });
    assert!(
        made.status.success(),
        "tests/{script} failed:\n{}",
        String::from_utf8_lossy(&made.stderr)
    );
    std::fs::read_to_string(models.join("manifest.json")).expect("read manifest.json")
}

/// The rank processes mpirun started on this host.
#[allow(dead_code)] // the collectives' tests kill no ranks
pub fn ranks_of(mpirun_pid: u32) -> Vec<u32> {
    let out = Command::new("pgrep")
        .arg("-P")
        .arg(mpirun_pid.to_string())
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[allow(dead_code)] // the collectives' tests kill no ranks
pub fn sigkill(pid: u32) {
    let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
}
