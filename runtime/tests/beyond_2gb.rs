//! A model over 2 GB (a sparse data file, weights past byte 2^31): loading
//! reads no weight, and a tensor-parallel rank reads only its slices.

use mpinfer_collectives::transport::{Counting, LocalWorld};
use mpinfer_collectives::{Communicator, Config};
use mpinfer_kernels::cpu::Cpu;
use mpinfer_kernels::Tensor;
use mpinfer_runtime::model::bytes_read;
use mpinfer_runtime::npy::NpyFile;
use mpinfer_runtime::onnx;
use mpinfer_runtime::run::{run, Outputs, RunError, RunOptions, Strategy};
use std::path::Path;
use std::process::Command;

struct Rows(Vec<f32>);

impl Outputs for Rows {
    fn collected(&mut self, _first: usize, y: &Tensor) -> Result<(), RunError> {
        self.0.extend_from_slice(&y.data);
        Ok(())
    }
}

#[test]
fn tensor_parallel_ranks_read_only_their_slices_of_a_model_over_2gb() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("big-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let made = Command::new(manifest.join("../.venv/bin/python"))
        .arg(manifest.join("tests/models.py"))
        .arg(&dir)
        .output()
        .expect("run models.py (scripts/setup.sh makes the venv)");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let data = std::fs::metadata(dir.join("big.data")).unwrap().len();
    assert!(data > 1 << 31, "the data file has {data} bytes");

    let before = bytes_read();
    let model = onnx::load(&dir.join("big.onnx")).unwrap();
    assert_eq!(bytes_read(), before, "loading read weights");
    let npy = |k: &str| {
        NpyFile::open(&dir.join(format!("big.{k}.npy")))
            .and_then(|f| f.read_all())
            .unwrap()
    };
    let (x, want) = (npy("x"), npy("y"));

    let opts = RunOptions {
        strategy: Strategy::Tensor,
        ..RunOptions::default()
    };
    let per_rank = LocalWorld::run(2, |t| {
        let comm = Communicator::new(Counting::new(t), Config::default());
        let start = bytes_read();
        let mut out = Rows(Vec::new());
        run(&comm, &model, &Cpu::new(1), &x, &mut out, &opts).expect("run");
        (bytes_read() - start, out.0)
    });
    // w1 [64, 512] by columns with b1, then w2 [512, 10] by rows, with the
    // whole b2 added after the reduce: each rank's share, in f32 bytes.
    let (k, h, n) = (64u64, 512u64, 10u64);
    let share = 4 * (k * h / 2 + h / 2 + h / 2 * n + n);
    for (r, (read, _)) in per_rank.iter().enumerate() {
        assert_eq!(
            *read, share,
            "rank {r} read {read} bytes, its slices are {share}"
        );
    }
    let got = &per_rank[0].1;
    let scale = want.data.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(&want.data).enumerate() {
        assert!((g - w).abs() <= 1e-4 * scale, "element {i}: {g} vs {w}");
    }
    assert_eq!(got.len(), want.data.len());
    let _ = std::fs::remove_dir_all(&dir);
}
