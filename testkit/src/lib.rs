//! Skips that survive the test harness.
//!
//! libtest has no way to skip a test at run time: a test that returns early
//! is reported as passed, and whatever it printed is captured. [`skip`]
//! records the test and the reason in the file named by `MPINFER_SKIP_LOG`
//! (one line per skip, appended) so that `scripts/test.sh` can list them and
//! count them as skipped instead of passed. Without that variable the line
//! goes to stderr only, which `--nocapture` shows.

use std::io::Write;

/// The variable naming the file that skips are appended to.
pub const SKIP_LOG: &str = "MPINFER_SKIP_LOG";

/// Where a skip line starts; the runner greps for it.
pub const MARKER: &str = "SKIPPED";

/// Records that the calling test did not run what it is named for, and why.
/// The caller returns right after.
pub fn skip(reason: &str) {
    let line = skip_line(&test_name(), reason);
    eprintln!("{line}");
    let Some(path) = std::env::var_os(SKIP_LOG) else {
        return;
    };
    // One write of one short line to a file opened for appending: lines
    // from tests running in parallel threads or processes stay whole.
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
    if let Err(e) = written {
        panic!("cannot record a skip in {}: {e}", path.to_string_lossy());
    }
}

/// The variable that makes a test needing a GPU fail instead of skipping:
/// on a machine that has one, a skip would hide a broken driver or toolkit.
pub const REQUIRE_CUDA: &str = "MPINFER_REQUIRE_CUDA";

/// [`skip`] for a test that needs a CUDA device, or a panic naming the
/// reason when `MPINFER_REQUIRE_CUDA=1`.
pub fn skip_cuda(reason: &str) {
    if required(std::env::var(REQUIRE_CUDA).ok().as_deref()) {
        panic!("{REQUIRE_CUDA}=1, but {reason}");
    }
    skip(reason);
}

fn required(value: Option<&str>) -> bool {
    matches!(value, Some(v) if !v.is_empty() && v != "0")
}

/// `SKIPPED <binary>::<test>: <reason>`, on one line.
pub fn skip_line(test: &str, reason: &str) -> String {
    let reason = reason.replace('\n', " ");
    format!("{MARKER} {test}: {reason}")
}

/// The binary's name and the running test's: libtest names each test's
/// thread after the test; a `harness = false` binary's main thread is `main`.
fn test_name() -> String {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|s| strip_hash(&s).to_string())
        .unwrap_or_else(|| "?".into());
    let thread = std::thread::current();
    format!("{binary}::{}", thread.name().unwrap_or("?"))
}

/// Cargo names test binaries `name-0123456789abcdef`.
fn strip_hash(stem: &str) -> &str {
    match stem.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            name
        }
        _ => stem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requiring_cuda_takes_any_value_but_empty_and_zero() {
        assert!(required(Some("1")));
        assert!(required(Some("yes")));
        assert!(!required(Some("0")));
        assert!(!required(Some("")));
        assert!(!required(None));
    }

    #[test]
    fn a_skip_line_is_one_line_that_names_the_test() {
        let line = skip_line("cuda_ops::gemm", "no CUDA device\n(driver missing)");
        assert_eq!(
            line,
            "SKIPPED cuda_ops::gemm: no CUDA device (driver missing)"
        );
    }

    #[test]
    fn cargo_hashes_are_stripped_from_binary_names() {
        assert_eq!(strip_hash("cpu_ops-0123456789abcdef"), "cpu_ops");
        assert_eq!(strip_hash("mpi-run"), "mpi-run");
    }
}
