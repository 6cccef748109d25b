//! scripts/tally.py, which ends scripts/test.sh with its total line, on
//! logs shaped like cargo's: the line must be true when a suite does not
//! build, dies before its totals, embeds a child's totals, or skips.

use std::path::Path;
use std::process::Command;

fn tally(log: &str, skips: &str) -> String {
    let dir = tempdir();
    let (log_path, skip_path) = (dir.join("log"), dir.join("skips"));
    std::fs::write(&log_path, log).unwrap();
    std::fs::write(&skip_path, skips).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/tally.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(&log_path)
        .arg(&skip_path)
        .output()
        .expect("run python3 scripts/tally.py");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn tempdir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "tally-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn total(out: &str) -> &str {
    out.lines().last().unwrap_or("")
}

const GOOD_SUITE: &str = "     Running unittests src/lib.rs (target/release/deps/a-0123)

running 3 tests
test x ... ok
test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s
";

fn step(name: &str, body: &str, code: i32) -> String {
    format!("== step {name}\n{body}== step-exit {name} {code}\n")
}

#[test]
fn passing_suites_are_summed() {
    let log = step("tests", &format!("{GOOD_SUITE}{GOOD_SUITE}"), 0);
    assert_eq!(
        total(&tally(&log, "")),
        "all: 6 passed, 0 failed, 0 skipped"
    );
}

#[test]
fn a_suite_that_does_not_build_is_a_failure() {
    let body = format!(
        "{GOOD_SUITE}error[E0425]: cannot find value `x` in this scope\n\
         error: could not compile `mpinfer-kernels` (test \"cpu_ops\") due to 1 previous error\n"
    );
    let out = tally(&step("tests", &body, 101), "");
    assert_eq!(total(&out), "all: 3 passed, 1 failed, 0 skipped");
    assert!(
        out.contains("`mpinfer-kernels` (test \"cpu_ops\") did not build"),
        "{out}"
    );
}

#[test]
fn a_binary_that_dies_before_its_totals_is_a_failure() {
    let body = format!(
        "     Running tests/mpi_run.rs (target/release/deps/mpi_run-0123)\n\
         test seed_net_data_n1 ... ok\n\
         error: test failed, to rerun pass `--test mpi_run`\n\
         {GOOD_SUITE}"
    );
    let out = tally(&step("tests", &body, 101), "");
    assert_eq!(total(&out), "all: 3 passed, 1 failed, 0 skipped");
    assert!(out.contains("tests/mpi_run.rs"), "{out}");
}

#[test]
fn a_child_runs_totals_inside_a_failure_message_count_once() {
    let body = "     Running tests/cpu_ops.rs (target/release/deps/cpu_ops-0123)

running 2 tests
test portable ... FAILED
test other ... ok

failures:

---- portable stdout ----
portable kernels:
running 3 tests
test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.20s

test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.30s
";
    let out = tally(&step("tests", body, 101), "");
    assert_eq!(total(&out), "all: 1 passed, 1 failed, 0 skipped");
}

#[test]
fn a_step_that_fails_without_a_test_is_a_failure() {
    let out = tally(&step("format", "Diff in src/main.rs at line 3:\n", 1), "");
    assert_eq!(total(&out), "all: 0 passed, 1 failed, 0 skipped");
    assert!(out.contains("failed: format: exited 1"), "{out}");
}

#[test]
fn skips_move_from_passed_to_skipped_with_their_reason() {
    let log = step("tests", GOOD_SUITE, 0)
        + &step(
            "slurm",
            "SKIP slurm job scripts: needs root\nPASS cpu-data seed_net\n",
            0,
        );
    let skips = "SKIPPED cuda_ops::gemm_matches: no CUDA device (no libcuda)\n";
    let out = tally(&log, skips);
    assert_eq!(total(&out), "all: 3 passed, 0 failed, 2 skipped");
    assert!(
        out.contains("skipped: cuda_ops::gemm_matches: no CUDA device"),
        "{out}"
    );
    assert!(
        out.contains("skipped: SLURM slurm job scripts: needs root"),
        "{out}"
    );
}

#[test]
fn multi_rank_binaries_report_their_own_skips() {
    let body = "     Running tests/mpi_run.rs (target/release/deps/mpi_run-0123)
test a ... ok
test b ... skipped: MPICH aborts there

4 passed, 1 failed, 2 skipped
";
    let out = tally(&step("tests", body, 1), "");
    assert_eq!(total(&out), "all: 4 passed, 1 failed, 2 skipped");
    assert!(out.contains("skipped: b: MPICH aborts there"), "{out}");
}
