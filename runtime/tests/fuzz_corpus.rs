//! Replays the fuzz corpus and the saved crash inputs (fuzz/corpus/TARGET,
//! fuzz/regressions/TARGET) through the fuzz targets' own code, so that a
//! plain `cargo test` guards what fuzzing found without nightly or
//! cargo-fuzz. An input may be refused with an error; it must not panic.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

mod onnx_load {
    include!("../../fuzz/targets/onnx_load_body.rs");
}

mod npy_read {
    include!("../../fuzz/targets/npy_read_body.rs");
}

mod signature_decode {
    include!("../../fuzz/targets/signature_decode_body.rs");
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

fn replay(target: &str, run: fn(&[u8])) {
    let corpus = files(&fuzz_dir().join("corpus").join(target));
    assert!(
        !corpus.is_empty(),
        "fuzz/corpus/{target} is empty or missing: the regression corpus was not committed"
    );
    let regressions = files(&fuzz_dir().join("regressions").join(target));
    let mut panicked = Vec::new();
    for path in corpus.iter().chain(&regressions) {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
            panicked.push(path.display().to_string());
        }
    }
    assert!(
        panicked.is_empty(),
        "{target}: {} of {} inputs panicked (messages above):\n{}",
        panicked.len(),
        corpus.len() + regressions.len(),
        panicked.join("\n")
    );
}

#[test]
fn onnx_load_corpus() {
    replay("onnx_load", onnx_load::run);
}

#[test]
fn npy_read_corpus() {
    replay("npy_read", npy_read::run);
}

#[test]
fn signature_decode_corpus() {
    replay("signature_decode", signature_decode::run);
}
