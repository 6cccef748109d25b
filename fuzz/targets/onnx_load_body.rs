// Shared by the `onnx_load` fuzz target and runtime/tests/fuzz_corpus.rs, so
// that every saved input is replayed by `cargo test` exactly as it was fuzzed.

use mpinfer_runtime::model::{Model, Weight};
use std::ops::Range;

/// The importer refuses an input sample of more values than this so that
/// shape arithmetic cannot overflow. Every later activation is sized, costed
/// and allocated from the same kind of products, so a model that loads must
/// keep each of them as small, whatever its weights' shapes claim.
const MAX_ACTIVATION: usize = 1 << 40;

/// Loads `data` as a model file and, when it loads, uses it the way a run
/// does: every weight read whole and in slices, every node's shapes and
/// cost. Errors are expected; panics, aborts and unbounded allocations are
/// the bugs.
pub fn run(data: &[u8]) {
    // The loader maps a path; one file per thread keeps parallel test
    // threads apart.
    let path = Scratch::new("onnx");
    std::fs::write(&path.0, data).expect("cannot write the scratch model file");
    if let Ok(model) = mpinfer_runtime::onnx::load(&path.0) {
        exercise(&model);
    }
}

fn exercise(model: &Model) {
    for w in model.weights() {
        read_weight(w);
    }
    let one = model
        .spec(1)
        .unwrap_or_else(|e| panic!("shapes were checked at batch 1 on load, yet: {e}"));
    for node in &model.nodes {
        for &v in &node.outputs {
            let shape = one.shape(v);
            let values = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            assert!(
                values.is_some_and(|n| n <= MAX_ACTIVATION),
                "node {} ({}) outputs {shape:?} for one sample, more than {MAX_ACTIVATION} values",
                node.name,
                node.op_type
            );
        }
    }
    // Batch 0 is legal (an empty input still has a per-sample shape).
    for batch in [0, 1, 3] {
        let Ok(spec) = model.spec(batch) else {
            continue;
        };
        for i in 0..model.nodes.len() {
            let _ = mpinfer_runtime::run::node_flops(model, &spec, i);
        }
    }
    let _ = model.output_sample_shapes();
}

fn read_weight(w: &Weight) {
    let Ok(full) = w.read() else {
        return;
    };
    assert_eq!(
        full.shape, w.shape,
        "weight {} read with the wrong shape",
        w.name
    );
    // Ranks read one axis at a time (rows of a Gemm, output channels of a
    // Conv): each such slice must be the matching part of the whole.
    for axis in 0..w.shape.len() {
        let d = w.shape[axis];
        let range = d / 3..d - d / 3;
        let ranges: Vec<Range<usize>> = w
            .shape
            .iter()
            .enumerate()
            .map(|(a, &n)| if a == axis { range.clone() } else { 0..n })
            .collect();
        let part = w
            .read_slice(&ranges)
            .unwrap_or_else(|e| panic!("weight {}: {ranges:?} in range but: {e}", w.name));
        if !full.data.is_empty() {
            let want = slice_along(&full.data, &w.shape, axis, range);
            assert!(
                same_bits(&part.data, &want),
                "weight {}: slice {ranges:?} differs from the whole read",
                w.name
            );
        }
    }
    let mut past = w.shape.iter().map(|&n| 0..n).collect::<Vec<_>>();
    if let Some(first) = past.first_mut() {
        first.end += 1;
        assert!(
            w.read_slice(&past).is_err(),
            "weight {}: read past its end",
            w.name
        );
    }
}

/// `data[.., range, ..]` with `range` on `axis`. Only called for non-empty
/// tensors, so no partial product of `shape` can overflow.
fn slice_along(data: &[f32], shape: &[usize], axis: usize, range: Range<usize>) -> Vec<f32> {
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let mut out = Vec::with_capacity(outer * range.len() * inner);
    for o in 0..outer {
        for j in range.clone() {
            let at = (o * shape[axis] + j) * inner;
            out.extend_from_slice(&data[at..at + inner]);
        }
    }
    out
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
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
