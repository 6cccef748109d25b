//! Single-operator ONNX models through ONNX Runtime as an independent oracle
//! for the CPU kernels. Needs the Python environment `scripts/setup.sh`
//! creates (`.venv` with onnx and onnxruntime).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{assert_close_tensors, random};
use mpinfer_kernels::cpu::*;
use mpinfer_kernels::Tensor;
use rand::rngs::StdRng;
use rand::SeedableRng;

fn python() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run scripts/setup.sh, which creates it",
        venv.display()
    );
    venv
}

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mpinfer-ort-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(path: &Path, t: &Tensor) {
    let bytes: Vec<u8> = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
}

/// ONNX Runtime's output for `op` with `attrs` (JSON) on `inputs`.
fn onnxruntime(op: &str, attrs: &str, opset: u32, inputs: &[&Tensor]) -> Tensor {
    let dir = scratch_dir();
    let out = dir.join(format!("{op}-out.bin"));
    let mut cmd = Command::new(python());
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ort_oracle.py"))
        .arg(op)
        .arg(attrs)
        .arg(opset.to_string())
        .arg(&out);
    for (i, t) in inputs.iter().enumerate() {
        let p = dir.join(format!("{op}-in{i}.bin"));
        write(&p, t);
        let dims = if t.shape.is_empty() {
            "-".to_string()
        } else {
            t.shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        cmd.arg(p).arg(dims);
    }
    let run = cmd.output().expect("run ort_oracle.py");
    assert!(
        run.status.success(),
        "ONNX Runtime failed on {op} {attrs}: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let dims = String::from_utf8(run.stdout).unwrap();
    let shape: Vec<usize> = dims
        .trim()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|d| d.parse().unwrap())
        .collect();
    let data: Vec<f32> = std::fs::read(&out)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    Tensor::new(shape, data)
}

/// Within 1e-4 of ONNX Runtime, relative to values of magnitude 1 or more.
fn assert_matches(got: &Tensor, want: &Tensor, what: &str) {
    let scale: Vec<f32> = want.data.iter().map(|w| w.abs().max(1.0)).collect();
    assert_close_tensors(
        got,
        want,
        &scale,
        1e-4,
        &format!("{what}, against ONNX Runtime"),
    );
}

#[test]
fn conv_matches_onnxruntime() {
    let mut rng = StdRng::seed_from_u64(11);
    let cpu = Cpu::new(2);
    let cases: [(Conv2d, [usize; 4], [usize; 4], &str); 5] = [
        (Conv2d::default(), [2, 3, 9, 8], [4, 3, 3, 3], r#"{}"#),
        (
            Conv2d {
                strides: [2, 1],
                pads: [1, 0, 2, 1],
                dilations: [1, 2],
                ..Conv2d::default()
            },
            [1, 4, 11, 10],
            [5, 4, 3, 2],
            r#"{"strides": [2, 1], "pads": [1, 0, 2, 1], "dilations": [1, 2]}"#,
        ),
        (
            Conv2d {
                groups: 2,
                ..Conv2d::default()
            },
            [2, 6, 7, 7],
            [4, 3, 3, 3],
            r#"{"group": 2}"#,
        ),
        (
            Conv2d {
                groups: 6,
                pads: [1; 4],
                ..Conv2d::default()
            },
            [1, 6, 5, 5],
            [6, 1, 3, 3],
            r#"{"group": 6, "pads": [1, 1, 1, 1]}"#,
        ),
        // 3x3, stride 1, 8+ channels: the Winograd path, with odd sizes and pads.
        (
            Conv2d {
                pads: [1, 0, 1, 2],
                ..Conv2d::default()
            },
            [2, 8, 9, 10],
            [5, 8, 3, 3],
            r#"{"pads": [1, 0, 1, 2]}"#,
        ),
    ];
    for (conv, xs, ws, attrs) in cases {
        let x = random(&xs, &mut rng);
        let w = random(&ws, &mut rng);
        let b = random(&[ws[0]], &mut rng);
        let want = onnxruntime("Conv", attrs, 17, &[&x, &w, &b]);
        let got = conv.run(&cpu, &x, &w, Some(&b.data)).unwrap();
        assert_matches(&got, &want, &format!("Conv {attrs}"));
    }
}

#[test]
fn gemm_matches_onnxruntime() {
    let mut rng = StdRng::seed_from_u64(12);
    let cpu = Cpu::new(2);
    let a = random(&[6, 5], &mut rng);
    let b = random(&[7, 6], &mut rng);
    let c = random(&[7], &mut rng);
    let g = Gemm {
        trans_a: true,
        trans_b: true,
        alpha: 0.5,
        beta: 2.0,
        relu: false,
    };
    let want = onnxruntime(
        "Gemm",
        r#"{"transA": 1, "transB": 1, "alpha": 0.5, "beta": 2.0}"#,
        13,
        &[&a, &b, &c],
    );
    assert_matches(&g.run(&cpu, &a, &b, Some(&c)).unwrap(), &want, "Gemm");
}

#[test]
fn pooling_matches_onnxruntime() {
    let mut rng = StdRng::seed_from_u64(13);
    let cpu = Cpu::new(2);
    let x = random(&[2, 3, 9, 10], &mut rng);
    let cases = [
        (
            Pool2d {
                strides: [2, 2],
                ..Pool2d::new(PoolKind::Max, [3, 3])
            },
            "MaxPool",
            r#"{"kernel_shape": [3, 3], "strides": [2, 2]}"#,
        ),
        (
            Pool2d {
                strides: [2, 2],
                pads: [1, 0, 1, 1],
                ceil_mode: true,
                ..Pool2d::new(PoolKind::Max, [3, 2])
            },
            "MaxPool",
            r#"{"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 0, 1, 1], "ceil_mode": 1}"#,
        ),
        (
            Pool2d {
                dilations: [2, 2],
                ..Pool2d::new(PoolKind::Max, [2, 2])
            },
            "MaxPool",
            r#"{"kernel_shape": [2, 2], "dilations": [2, 2]}"#,
        ),
        (
            Pool2d {
                strides: [2, 3],
                pads: [1, 1, 1, 1],
                count_include_pad: true,
                ..Pool2d::new(PoolKind::Average, [3, 3])
            },
            "AveragePool",
            r#"{"kernel_shape": [3, 3], "strides": [2, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1}"#,
        ),
        (
            Pool2d {
                strides: [2, 2],
                pads: [1, 1, 1, 1],
                ceil_mode: true,
                ..Pool2d::new(PoolKind::Average, [3, 3])
            },
            "AveragePool",
            r#"{"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1}"#,
        ),
    ];
    for (pool, op, attrs) in cases {
        let want = onnxruntime(op, attrs, 19, &[&x]);
        assert_matches(
            &pool.run(&cpu, &x).unwrap(),
            &want,
            &format!("{op} {attrs}"),
        );
    }
    let want = onnxruntime("GlobalAveragePool", "{}", 17, &[&x]);
    assert_matches(
        &global_average_pool(&x).unwrap(),
        &want,
        "GlobalAveragePool",
    );
}

#[test]
fn softmax_flatten_relu_match_onnxruntime() {
    let mut rng = StdRng::seed_from_u64(14);
    let x = random(&[2, 3, 4], &mut rng);
    for axis in [0usize, 1, 2] {
        let mut got = x.clone();
        softmax(&mut got, axis).unwrap();
        let want = onnxruntime("Softmax", &format!(r#"{{"axis": {axis}}}"#), 13, &[&x]);
        assert_matches(&got, &want, &format!("Softmax-13 axis {axis}"));
        let mut got = x.clone();
        softmax_coerced(&mut got, axis).unwrap();
        let want = onnxruntime("Softmax", &format!(r#"{{"axis": {axis}}}"#), 11, &[&x]);
        assert_matches(&got, &want, &format!("Softmax-11 axis {axis}"));
    }
    let want = onnxruntime("Flatten", r#"{"axis": 2}"#, 13, &[&x]);
    assert_matches(&flatten(x.clone(), 2).unwrap(), &want, "Flatten");
    let want = onnxruntime("Relu", "{}", 14, &[&x]);
    let mut got = x.clone();
    relu(&mut got);
    assert_matches(&got, &want, "Relu");
}
