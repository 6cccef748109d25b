//! Every op and attribute combination mpinfer claims, as a one-op graph
//! (runtime/tests/op_models.py), against ONNX Runtime's output: whole in
//! this process, then on every strategy from 1 to 4 ranks; and where the
//! tensor plans of the graphs built to keep their splits gather.

mod common;

use common::{run_on, single};
use mpinfer_kernels::Tensor;
use mpinfer_runtime::npy::NpyFile;
use mpinfer_runtime::onnx;
use mpinfer_runtime::run::{tensor_plan, RunOptions, Strategy};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The cases, written by op_models.py into a folder of this process's.
fn cases(test: &str) -> (PathBuf, Vec<String>) {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("ops-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = manifest.join("../.venv/bin/python");
    let out = Command::new(&python)
        .arg(manifest.join("tests/op_models.py"))
        .arg(&dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e} (scripts/setup.sh makes it)",
                python.display()
            )
        });
    assert!(
        out.status.success(),
        "op_models.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names = std::fs::read_to_string(dir.join("cases.txt")).unwrap();
    (dir, names.lines().map(str::to_string).collect())
}

fn npy(path: &Path) -> Tensor {
    NpyFile::open(path).and_then(|f| f.read_all()).unwrap()
}

/// Within `tol` of the largest |expected|, NaN where it is NaN.
fn close(got: &Tensor, want: &Tensor, tol: f32) -> Result<(), String> {
    if got.shape != want.shape {
        return Err(format!(
            "shape {:?}, ONNX Runtime {:?}",
            got.shape, want.shape
        ));
    }
    let scale = want
        .data
        .iter()
        .fold(0f32, |m, v| m.max(v.abs()))
        .max(1e-30);
    for (i, (g, w)) in got.data.iter().zip(&want.data).enumerate() {
        let ok = if w.is_nan() {
            g.is_nan()
        } else {
            (g - w).abs() <= tol * scale
        };
        if !ok {
            return Err(format!("element {i}: {g}, ONNX Runtime {w}"));
        }
    }
    Ok(())
}

#[test]
fn every_op_matches_onnx_runtime_on_every_strategy() {
    let (dir, names) = cases("all");
    let mut failures = Vec::new();
    for name in &names {
        let model = match onnx::load(&dir.join(format!("{name}.onnx"))) {
            Ok(m) => m,
            Err(e) => {
                failures.push(format!("{name}: does not load: {e}"));
                continue;
            }
        };
        let x = npy(&dir.join(format!("{name}.in.npy")));
        let want = npy(&dir.join(format!("{name}.out.npy")));
        if let Err(e) = close(&single(&model, &x), &want, 1e-5) {
            failures.push(format!("{name}, one process: {e}"));
        }
        for strategy in [Strategy::Data, Strategy::Tensor, Strategy::Pipeline] {
            for ranks in 1..=4 {
                let opts = RunOptions {
                    strategy,
                    batch_size: Some(2),
                    ..RunOptions::default()
                };
                let (got, _) = run_on(ranks, &model, &x, &opts);
                if let Err(e) = close(&got, &want, 1e-4) {
                    failures.push(format!("{name}, {strategy:?} on {ranks} ranks: {e}"));
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        failures.is_empty(),
        "{} failures over {} cases:\n{}",
        failures.len(),
        names.len(),
        failures.join("\n")
    );
}

/// Where a tensor plan gathers, reduces and splits by heads, counted from
/// the plan's own description.
fn plan_lines(model: &mpinfer_runtime::model::Model, ranks: usize) -> (usize, usize, usize) {
    let lines = tensor_plan(model, ranks).unwrap().describe(model);
    let count = |p: &str| lines.iter().filter(|l| l.starts_with(p)).count();
    (count("allgather"), count("allreduce"), count("split "))
}

#[test]
fn tensor_parallel_keeps_heads_and_concatenations_split() {
    let (dir, _) = cases("plans");
    let load = |name: &str| onnx::load(&dir.join(format!("{name}.onnx"))).unwrap();
    for ranks in 2..=4 {
        // Four heads: each rank takes whole heads of the queries, keys and
        // values, and the output projection's allreduce is the only
        // collective.
        let attention = load("attention_heads");
        assert_eq!(
            plan_lines(&attention, ranks),
            (0, 1, 1),
            "attention on {ranks} ranks"
        );
        for name in ["concat_split_channels_conv", "concat_split_channels_linear"] {
            assert_eq!(
                plan_lines(&load(name), ranks),
                (0, 1, 0),
                "{name} on {ranks} ranks"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    // The exported two-layer ViT: one allreduce per attention block and one
    // per MLP; the only gather joins the class token to the patch
    // embedding, before the encoder.
    let torch = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/torch");
    for exporter in ["dynamo", "legacy"] {
        let vit = onnx::load(&torch.join(format!("vit.{exporter}.onnx"))).unwrap();
        assert_eq!(plan_lines(&vit, 2), (1, 4, 2), "vit.{exporter} on 2 ranks");
    }
}
