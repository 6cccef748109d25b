// Shared by the `npy_read` fuzz target and runtime/tests/fuzz_corpus.rs, so
// that every saved input is replayed by `cargo test` exactly as it was fuzzed.

use mpinfer_runtime::npy::{read_labels, NpyFile};

/// Opens `data` as a `.npy` file both as floats and as labels, and reads
/// what opens. Errors are expected; panics, aborts and unbounded
/// allocations are the bugs.
pub fn run(data: &[u8]) {
    let path = Scratch::new("npy");
    std::fs::write(&path.0, data).expect("cannot write the scratch .npy file");
    if let Ok(file) = NpyFile::open(&path.0) {
        read_floats(&file);
    }
    let _ = read_labels(&path.0);
}

fn read_floats(file: &NpyFile) {
    let all = file.read_all();
    if let Ok(all) = &all {
        assert_eq!(all.shape, file.shape());
    }
    if file.shape().is_empty() {
        assert!(file.read_rows(0..1).is_err(), "a scalar has no rows");
        return;
    }
    let rows = file.rows();
    let sub = rows / 3..rows - rows / 3;
    let part = file.read_rows(sub.clone());
    // Rows are read by offset, the whole by length: both must agree.
    if let (Ok(all), Ok(part)) = (&all, &part) {
        if let Some(per_row) = all.data.len().checked_div(rows) {
            let want = &all.data[sub.start * per_row..sub.end * per_row];
            assert!(
                part.data.len() == want.len()
                    && part
                        .data
                        .iter()
                        .zip(want)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                "rows {sub:?} differ from the same rows of the whole file"
            );
        }
    }
    assert!(
        file.read_rows(rows..rows + 1).is_err(),
        "read past the last row"
    );
}

/// A file of this thread's own, removed however the run ends short of an
/// abort, so that replaying a failing input leaves nothing behind.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(ext: &str) -> Scratch {
        Scratch(std::env::temp_dir().join(format!(
            "mpinfer-fuzz-{}-{:?}.{ext}",
            std::process::id(),
            std::thread::current().id()
        )))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
