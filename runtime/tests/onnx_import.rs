//! Loads the models written by models.py (ONNX's Python package, with the
//! expected values from NumPy and the expected shapes from ONNX Runtime) and
//! checks what the importer makes of them.

mod common;

use common::whole_program;
use mpinfer_kernels::cpu::{Conv2d, Gemm, Pool2d, PoolKind};
use mpinfer_kernels::{StoredDType, Tensor};
use mpinfer_runtime::exec::{Instr, Step};
use mpinfer_runtime::graph::op::resolve_pads;
use mpinfer_runtime::graph::{Constant, Node, Op};
use mpinfer_runtime::model::{Model, Source, Weight};
use mpinfer_runtime::npy::NpyFile;
use mpinfer_runtime::{onnx, ModelError};
use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

/// The models, written once per test process.
fn models_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
        remove_stale(root);
        let dir = root.join(format!("onnx_import-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = manifest.join("../.venv/bin/python");
        let script = manifest.join("tests/models.py");
        let out = Command::new(&python)
            .arg(&script)
            .arg(&dir)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {}: {e}; run scripts/setup.sh to create the venv with onnx, \
                     onnxruntime and numpy",
                    python.display()
                )
            });
        assert!(
            out.status.success(),
            "{} failed (run scripts/setup.sh if onnx, onnxruntime or numpy is missing):\n{}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

/// Model folders of earlier runs, left because a process cannot clean up
/// after its last test.
fn remove_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t < hour_ago);
        if old && e.file_name().to_string_lossy().starts_with("onnx_import-") {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn path(name: &str) -> PathBuf {
    models_dir().join(format!("{name}.onnx"))
}

fn load(name: &str) -> Model {
    onnx::load(&path(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn load_err(name: &str) -> ModelError {
    match onnx::load(&path(name)) {
        Ok(m) => panic!("{name} loaded: {:?}", kinds(&m)),
        Err(e) => e,
    }
}

/// A value the script saved for the test.
fn expected(model: &str, key: &str) -> Tensor {
    let p = models_dir().join(format!("{model}.{key}.npy"));
    NpyFile::open(&p).and_then(|f| f.read_all()).unwrap()
}

/// Output shapes ONNX Runtime gave each node for a batch of 2.
fn ort_shapes(model: &str) -> HashMap<String, Vec<usize>> {
    let text = std::fs::read_to_string(models_dir().join(format!("{model}.shapes.txt"))).unwrap();
    text.lines()
        .map(|l| {
            let mut words = l.split_whitespace();
            let name = words.next().unwrap().to_string();
            (name, words.map(|d| d.parse().unwrap()).collect())
        })
        .collect()
}

/// Every output of every node that runs matches ONNX Runtime's shape for
/// it, and so do the model's outputs.
fn check_shapes(name: &str, model: &Model) {
    let ort = ort_shapes(name);
    let spec = model.spec(2).unwrap();
    let mut compared = 0;
    for (i, node) in model.nodes.iter().enumerate() {
        for &v in node.outputs.iter().filter(|_| spec.runs[i]) {
            if let Some(want) = ort.get(&model.values[v].name) {
                assert_eq!(spec.shape(v), want, "{name}: node {}", node.name);
                compared += 1;
            }
        }
    }
    assert!(compared > 0, "{name}: no node compared");
    for &v in &model.outputs {
        let out = &model.values[v].name;
        assert_eq!(
            Some(&spec.shape(v).to_vec()),
            ort.get(out),
            "{name}: output {out}"
        );
    }
}

/// The nodes that run, as (name, op type).
fn kinds(model: &Model) -> Vec<(&str, &str)> {
    let spec = model.spec(1).unwrap();
    model
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| spec.runs[*i])
        .map(|(_, n)| (n.name.as_str(), n.op_type.as_str()))
        .collect()
}

fn node<'m>(model: &'m Model, name: &str) -> &'m Node {
    model
        .nodes
        .iter()
        .find(|n| n.name == name)
        .unwrap_or_else(|| panic!("no node {name} in {:?}", kinds(model)))
}

fn weight<'m>(model: &'m Model, n: &Node, i: usize) -> Option<&'m Weight> {
    n.input(i).and_then(|v| model.weight(v))
}

/// The input's height and width at batch 1.
fn spatial(model: &Model, n: &Node) -> [usize; 2] {
    let spec = model.spec(1).unwrap();
    let x = spec.shape(n.input(0).unwrap());
    [x[2], x[3]]
}

/// A Conv's attributes with SAME pads resolved for its input, and its
/// weight and bias.
fn conv_parts<'m>(model: &'m Model, name: &str) -> (Conv2d, &'m Weight, Option<&'m Weight>) {
    let n = node(model, name);
    let Op::Conv { conv, auto_pad, .. } = &n.op else {
        panic!("{name} is {:?}, not a Conv", n.op)
    };
    let w = weight(model, n, 1).expect("a constant weight");
    let mut c = *conv;
    let kernel = [w.shape[2], w.shape[3]];
    c.pads = resolve_pads(
        *auto_pad,
        c.pads,
        spatial(model, n),
        kernel,
        c.strides,
        c.dilations,
    );
    (c, w, weight(model, n, 2))
}

fn pool_of(model: &Model, name: &str) -> Pool2d {
    let n = node(model, name);
    let Op::Pool { pool, auto_pad, .. } = &n.op else {
        panic!("{name} is {:?}, not a pool", n.op)
    };
    let mut p = *pool;
    p.pads = resolve_pads(
        *auto_pad,
        p.pads,
        spatial(model, n),
        p.kernel,
        p.strides,
        p.dilations,
    );
    p
}

/// A Gemm's (or a MatMul's) attributes, weight and bias input as stored.
fn gemm_parts<'m>(model: &'m Model, name: &str) -> (Gemm, &'m Weight, Option<&'m Weight>) {
    let n = node(model, name);
    let g = match &n.op {
        Op::Gemm(g) => *g,
        Op::MatMul => Gemm::default(),
        op => panic!("{name} is {op:?}, not a Gemm"),
    };
    (
        g,
        weight(model, n, 1).expect("a constant weight"),
        weight(model, n, 2),
    )
}

/// The bias the linear step of node `name` adds, as a run loads it.
fn linear_bias(model: &Model, name: &str) -> Option<Vec<f32>> {
    let (p, _) = whole_program(model, 1);
    let at = model.nodes.iter().position(|n| n.name == name).unwrap();
    p.instrs.iter().find_map(|i| match i {
        Instr::Run {
            node,
            step: Step::Linear { bias, .. },
            ..
        } if *node == at => Some(bias.as_ref().map(|b| b.data.clone())),
        _ => None,
    })?
}

/// An integer constant input of a node (a Reshape target, say).
fn ints_input(model: &Model, n: &Node, i: usize) -> Vec<i64> {
    match &model.values[n.input(i).unwrap()].constant {
        Some(Constant::Ints(t)) => t.data.clone(),
        c => panic!("{}: input {i} is {c:?}", n.name),
    }
}

fn file_dtype(w: &Weight) -> Option<StoredDType> {
    match &w.source {
        Source::File { dtype, .. } => Some(*dtype),
        Source::Values(_) => None,
    }
}

fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * w.abs().max(1.0),
            "{what}[{i}]: {g} vs {w}"
        );
    }
}

/// The weight, whole and in a slice, equals `want` (up to `tol`).
fn check_weight(w: &Weight, want: &Tensor, tol: f32) {
    let got = w.read().unwrap();
    assert_eq!(got.shape, want.shape, "{}", w.name);
    assert_close(&got.data, &want.data, tol, &w.name);
    // A slice that is not contiguous: inner ranges cut on every axis it can.
    let ranges: Vec<Range<usize>> = want
        .shape
        .iter()
        .map(|&d| if d > 2 { 1..d - 1 } else { 0..d })
        .collect();
    let part = w.read_slice(&ranges).unwrap();
    assert_eq!(
        part.shape,
        ranges.iter().map(|r| r.len()).collect::<Vec<_>>()
    );
    assert_close(&part.data, &slice(want, &ranges), tol, &w.name);
}

fn slice(t: &Tensor, ranges: &[Range<usize>]) -> Vec<f32> {
    let mut out = Vec::new();
    let mut index: Vec<usize> = ranges.iter().map(|r| r.start).collect();
    if ranges.iter().any(|r| r.is_empty()) {
        return out;
    }
    loop {
        let flat = index
            .iter()
            .enumerate()
            .fold(0, |acc, (a, &i)| acc * t.shape[a] + i);
        out.push(t.data[flat]);
        let mut a = index.len();
        loop {
            if a == 0 {
                return out;
            }
            a -= 1;
            index[a] += 1;
            if index[a] < ranges[a].end {
                break;
            }
            index[a] = ranges[a].start;
        }
    }
}

#[test]
fn conv_stack_nodes_attributes_and_weights() {
    let m = load("conv_stack");
    assert_eq!(m.opset, 13);
    assert_eq!(m.input_name(), "x");
    assert_eq!(m.sample_shape, [3, 8, 8]);
    assert_eq!(m.output_names(), ["prob"]);
    assert_eq!(
        kinds(&m),
        [
            ("conv1", "Conv"),
            ("relu1", "Relu"),
            ("pool1", "MaxPool"),
            ("flat", "Flatten"),
            ("fc", "Gemm"),
            ("prob", "Softmax")
        ]
    );
    let (conv, w, b) = conv_parts(&m, "conv1");
    assert_eq!(conv.pads, [1, 1, 1, 1]);
    assert_eq!(
        (conv.strides, conv.dilations, conv.groups),
        ([1, 1], [1, 1], 1)
    );
    assert_eq!(file_dtype(w), Some(StoredDType::F32));
    check_weight(w, &expected("conv_stack", "w1"), 0.0);
    check_weight(b.unwrap(), &expected("conv_stack", "b1"), 0.0);

    let p = pool_of(&m, "pool1");
    assert_eq!(
        (p.kind, p.kernel, p.strides),
        (PoolKind::Max, [2, 2], [2, 2])
    );
    assert_eq!(node(&m, "flat").op, Op::Flatten { axis: 1 });

    let (gemm, w, c) = gemm_parts(&m, "fc");
    assert!(gemm.trans_b && !gemm.trans_a);
    assert_eq!((gemm.alpha, gemm.beta), (0.5, 2.0));
    assert_eq!(file_dtype(w), Some(StoredDType::F32));
    check_weight(w, &expected("conv_stack", "w2"), 0.0);
    // C stays in the file; beta = 2 multiplies it when the step is loaded.
    assert_eq!(file_dtype(c.unwrap()), Some(StoredDType::F32));
    assert_eq!(
        linear_bias(&m, "fc").unwrap(),
        expected("conv_stack", "c2_times_beta").data
    );
    assert_eq!(
        node(&m, "prob").op,
        Op::Softmax {
            axis: -1,
            coerced: false
        }
    );
    check_shapes("conv_stack", &m);
}

#[test]
fn initializers_listed_as_inputs_are_not_the_input() {
    let m = load("inits_as_inputs");
    assert_eq!(m.input_name(), "x");
    assert_eq!(kinds(&m).len(), 6);
}

#[test]
fn conv_and_pool_attributes() {
    let m = load("conv_attrs");
    assert_eq!(m.opset, 19);
    let (c, _, b) = conv_parts(&m, "grouped");
    assert_eq!((c.groups, c.dilations, c.strides), (2, [2, 1], [2, 2]));
    assert_eq!(c.pads, [0, 1, 2, 1]);
    assert!(b.is_none());
    // SAME_*: total padding per axis so that the output is ceil(in / stride),
    // the odd one at the end (UPPER) or the start (LOWER).
    let (c, _, _) = conv_parts(&m, "same_upper");
    assert_eq!((c.strides, c.pads), ([2, 2], [1, 0, 1, 1]));
    let (c, _, _) = conv_parts(&m, "same_lower");
    assert_eq!(c.pads, [1, 1, 0, 0]);
    let (c, _, b) = conv_parts(&m, "valid");
    assert_eq!(c.pads, [0; 4]);
    check_weight(b.unwrap(), &expected("conv_attrs", "bv"), 0.0);
    check_weight(
        conv_parts(&m, "grouped").1,
        &expected("conv_attrs", "wg"),
        0.0,
    );

    let p = pool_of(&m, "avg");
    assert_eq!(p.kind, PoolKind::Average);
    assert_eq!(
        (p.kernel, p.strides, p.pads),
        ([2, 2], [2, 1], [1, 0, 0, 1])
    );
    assert!(p.ceil_mode && p.count_include_pad);
    let p = pool_of(&m, "maxd");
    assert_eq!((p.kind, p.dilations), (PoolKind::Max, [1, 2]));
    assert!(!p.ceil_mode);
    assert_eq!(node(&m, "gap").op, Op::GlobalPool(PoolKind::Average));
    // axis -3 of a 4-D input: kept as written, counted from the end when
    // shapes are worked out (check_shapes compares them with ONNX Runtime).
    assert_eq!(node(&m, "flat").op, Op::Flatten { axis: -3 });
    check_shapes("conv_attrs", &m);
}

#[test]
fn pytorch_view_chain_is_worked_out_per_batch_size() {
    for (name, opset) in [("torch_view11", 11), ("torch_view13", 13)] {
        let m = load(name);
        assert_eq!(m.opset, opset);
        // The Shape/Gather/Unsqueeze/Concat chain is evaluated while
        // planning: only the Reshape runs.
        assert_eq!(
            kinds(&m),
            [("conv", "Conv"), ("view", "Reshape"), ("out", "MatMul")],
            "{name}"
        );
        check_weight(gemm_parts(&m, "out").1, &expected(name, "fc"), 0.0);
        check_shapes(name, &m);
        // The batch is not baked in.
        let spec = m.spec(7).unwrap();
        assert_eq!(spec.shape(m.outputs[0]), [7, 5]);
        let target = node(&m, "view").input(1).unwrap();
        assert_eq!(spec.ints(target).unwrap().data[0], 7, "{name}");
    }
}

#[test]
fn computed_shape_keeping_the_batch_is_a_reshape() {
    let m = load("torch_view_keep");
    assert_eq!(kinds(&m), [("view", "Reshape"), ("prob", "Softmax")]);
    let spec = m.spec(2).unwrap();
    let target = node(&m, "view").input(1).unwrap();
    assert_eq!(spec.ints(target).unwrap().data, [2, 3, -1]);
    assert_eq!(
        node(&m, "prob").op,
        Op::Softmax {
            axis: 1,
            coerced: false
        }
    );
    check_shapes("torch_view_keep", &m);
}

#[test]
fn batch_norm_folds_into_the_conv_before_it() {
    let m = load("bn_fold");
    assert_eq!(
        kinds(&m),
        [
            ("conv1", "Conv+BatchNormalization"),
            ("relu1", "Relu"),
            ("conv2", "Conv+BatchNormalization"),
            ("gap", "GlobalAveragePool")
        ]
    );
    for conv in ["conv1", "conv2"] {
        let (_, w, b) = conv_parts(&m, conv);
        // The weight stays in the file; the scale is applied as it is read.
        assert_eq!(file_dtype(w), Some(StoredDType::F32), "{conv}");
        assert!(w.row_scale.is_some());
        check_weight(w, &expected("bn_fold", &format!("{conv}.folded_w")), 1e-6);
        check_weight(
            b.unwrap(),
            &expected("bn_fold", &format!("{conv}.folded_b")),
            1e-6,
        );
    }
    check_shapes("bn_fold", &m);
}

#[test]
fn matmul_and_add_become_a_linear_layer() {
    let m = load("matmul_add");
    assert_eq!(
        kinds(&m),
        [
            ("mm1", "MatMul+Add"),
            ("relu", "Relu"),
            ("mm2", "MatMul+Add"),
            ("mm3", "MatMul")
        ]
    );
    let (g, w, b) = gemm_parts(&m, "mm1");
    assert!(!g.trans_a && !g.trans_b && g.alpha == 1.0 && g.beta == 1.0);
    check_weight(w, &expected("matmul_add", "w1"), 0.0);
    let b = b.unwrap();
    assert_eq!(file_dtype(b), Some(StoredDType::F32));
    check_weight(b, &expected("matmul_add", "b1"), 0.0);
    // A [1, N] bias added from the left is the same bias, read from the file.
    let (_, _, b) = gemm_parts(&m, "mm2");
    let b = b.unwrap();
    assert_eq!(file_dtype(b), Some(StoredDType::F32));
    check_weight(b, &expected("matmul_add", "b2"), 0.0);
    assert_eq!(
        linear_bias(&m, "mm2").unwrap(),
        expected("matmul_add", "b2").data
    );
    assert!(gemm_parts(&m, "mm3").2.is_none());
    check_shapes("matmul_add", &m);
}

#[test]
fn softmax_semantics_follow_the_opset() {
    let cases = [
        ("softmax11", 11, 1, true),
        ("softmax13", 13, 1, false),
        ("softmax21", 21, -1, false),
    ];
    for (name, opset, want_axis, want_coerced) in cases {
        let m = load(name);
        assert_eq!(m.opset, opset);
        match m.nodes[0].op {
            Op::Softmax { axis, coerced } => {
                assert_eq!((axis, coerced), (want_axis, want_coerced), "{name}")
            }
            ref op => panic!("{name}: {op:?}"),
        }
    }
    check_shapes("softmax11", &load("softmax11"));
}

#[test]
fn half_precision_initializers() {
    let m = load("f16_model");
    let (g, w, b) = gemm_parts(&m, "f16raw");
    assert!(g.trans_b);
    assert_eq!(file_dtype(w), Some(StoredDType::F16));
    check_weight(w, &expected("f16_model", "b_raw"), 0.0);
    let b = b.unwrap();
    assert_eq!(file_dtype(b), Some(StoredDType::F16));
    check_weight(b, &expected("f16_model", "c_raw"), 0.0);
    // int32_data holding the bits: decoded at load time.
    let (_, w, b) = gemm_parts(&m, "f16typed");
    assert_eq!(file_dtype(w), None);
    check_weight(w, &expected("f16_model", "b_typed"), 0.0);
    check_weight(b.unwrap(), &expected("f16_model", "c_typed"), 0.0);
    check_shapes("f16_model", &m);

    let m = load("bf16_model");
    let (_, w, _) = gemm_parts(&m, "bf16raw");
    assert_eq!(file_dtype(w), Some(StoredDType::BF16));
    check_weight(w, &expected("bf16_model", "b_raw"), 0.0);
    let (_, w, _) = gemm_parts(&m, "bf16typed");
    assert_eq!(file_dtype(w), None);
    check_weight(w, &expected("bf16_model", "b_typed"), 0.0);
    assert_eq!(m.spec(3).unwrap().shape(m.outputs[0]), [3, 2]);
}

#[test]
fn typed_float_data_initializers() {
    let m = load("typed_f32");
    assert_eq!(m.opset, 12);
    let name = m.nodes[0].name.clone();
    let (_, w, b) = conv_parts(&m, &name);
    assert_eq!(file_dtype(w), None);
    check_weight(w, &expected("typed_f32", "w"), 0.0);
    check_weight(b.unwrap(), &expected("typed_f32", "b"), 0.0);
    check_shapes("typed_f32", &m);
}

#[test]
fn reshape_targets_from_initializers_and_constants() {
    let m = load("reshape_const");
    let shapes: Vec<Vec<i64>> = m.nodes.iter().map(|n| ints_input(&m, n, 1)).collect();
    assert_eq!(shapes, [vec![0, -1], vec![-1, 4, 6], vec![0, 24]]);
    check_shapes("reshape_const", &m);

    // Exported at batch 1 with the 1 written into the target shape.
    let m = load("reshape_fixed_batch");
    assert_eq!(m.sample_shape, [2, 3, 4]);
    assert_eq!(ints_input(&m, &m.nodes[0], 1), [0, -1]);
    assert_eq!(m.spec(5).unwrap().shape(m.outputs[0]), [5, 24]);
}

#[test]
fn identity_and_dropout_are_dropped() {
    let m = load("identity_dropout");
    assert_eq!(kinds(&m), [("fc", "Gemm")]);
    assert_eq!(m.output_names(), ["out"]);
    let (_, w, _) = gemm_parts(&m, "fc");
    assert_eq!(w.name, "w");
    assert_eq!(file_dtype(w), Some(StoredDType::F32));
    check_weight(w, &expected("identity_dropout", "w"), 0.0);
    check_shapes("identity_dropout", &m);
}

#[test]
fn gemm_bias_shapes_and_beta() {
    let m = load("gemm_bias");
    let bias = |name: &str| linear_bias(&m, name);
    assert_eq!(bias("scalar_c").unwrap(), vec![1.5; 3]);
    // A [1, N] C is read from the file.
    assert_eq!(
        file_dtype(gemm_parts(&m, "row_c").2.unwrap()),
        Some(StoredDType::F32)
    );
    assert_eq!(bias("row_c").unwrap(), expected("gemm_bias", "c2").data);
    assert!(bias("zero_beta").is_none());
    assert_eq!(bias("one_by_one").unwrap(), vec![0.5, 0.5]);
    check_shapes("gemm_bias", &m);
}

#[test]
fn graphs_that_are_not_chains() {
    // A residual Add of a value and a node computed from it.
    let m = load("add_two");
    assert_eq!(kinds(&m), [("r", "Relu"), ("residual", "Add")]);
    check_shapes("add_two", &m);
    // A value read by two nodes; the one no output needs is dropped.
    let m = load("branch");
    assert_eq!(kinds(&m), [("a", "Relu"), ("c", "Relu")]);
    check_shapes("branch", &m);
    // BatchNormalization with no Conv to fold into runs on its own.
    let m = load("bn_alone");
    assert_eq!(kinds(&m), [("bn", "BatchNormalization")]);
    check_shapes("bn_alone", &m);
}

#[test]
fn the_map_is_released_after_loading() {
    let copy = models_dir().join("mapped_once.onnx");
    std::fs::copy(path("conv_stack"), &copy).unwrap();
    let m = onnx::load(&copy).unwrap();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    assert!(!maps.contains("mapped_once.onnx"), "{maps}");
    // Weights are still readable, from the open file.
    check_weight(
        conv_parts(&m, "conv1").1,
        &expected("conv_stack", "w1"),
        0.0,
    );
}

fn assert_format(name: &str, needle: &str) {
    match load_err(name) {
        ModelError::Format { path: p, message } => {
            assert_eq!(p, path(name));
            assert!(message.contains(needle), "{name}: {message}");
        }
        e => panic!("{name}: {e:?}"),
    }
}

fn assert_unsupported(name: &str, want_node: &str, want_op: &str, needle: &str) {
    match load_err(name) {
        ModelError::Unsupported {
            node,
            op_type,
            message,
        } => {
            assert_eq!((node.as_str(), op_type.as_str()), (want_node, want_op));
            assert!(message.contains(needle), "{name}: {message}");
        }
        e => panic!("{name}: {e:?}"),
    }
}

fn assert_graph(name: &str, needle: &str) {
    match load_err(name) {
        ModelError::Graph { path: p, message } => {
            assert_eq!(p, path(name));
            assert!(message.contains(needle), "{name}: {message}");
        }
        e => panic!("{name}: {e:?}"),
    }
}

#[test]
fn damaged_files_are_format_errors_naming_the_file() {
    assert_format("truncated", "not a valid ONNX model");
    assert_format("random", "not a valid ONNX model");
    assert_format("empty", "empty file");
    let e = onnx::load(&models_dir().join("absent.onnx")).unwrap_err();
    assert!(matches!(e, ModelError::Io { .. }), "{e:?}");
}

#[test]
fn lengths_are_checked_before_anything_is_allocated() {
    assert_format("huge_dims", "overflows");
    assert_format("huge_count", "elements, more than the");
    assert_format("short_raw", "needs 48 bytes, raw_data has 8");
}

#[test]
fn external_data_stays_in_its_file_until_read() {
    let m = load("external");
    let name = kinds(&m)[0].0.to_string();
    let (_, w, _) = gemm_parts(&m, &name);
    match &w.source {
        Source::File { file, offset, .. } => {
            assert_eq!(file.path, models_dir().join("external.data"));
            assert_eq!(*offset, 20);
        }
        Source::Values(_) => panic!("the external weight was read at load time"),
    }
    check_weight(w, &expected("external", "w"), 0.0);
    // The Reshape target came from the same file: [0, 3] keeps the batch.
    assert_eq!(m.spec(5).unwrap().shape(m.outputs[0]), [5, 3]);
}

#[test]
fn external_data_outside_the_model_folder_is_refused() {
    assert_format("external_climbs", "climbs out");
    assert_format("external_absolute", "is absolute");
    assert_format("external_link", "through a link");
    match load_err("external_missing") {
        ModelError::Io { path: p, .. } => assert_eq!(p, models_dir().join("no_such.data")),
        e => panic!("{e:?}"),
    }
}

#[test]
fn external_data_lengths_are_checked_against_its_file() {
    for (name, needle) in [
        ("external_short", "run past the end of the file"),
        (
            "external_length",
            "needs 48 bytes, its external data says length 12",
        ),
    ] {
        match load_err(name) {
            ModelError::Format { path: p, message } => {
                assert_eq!(p, models_dir().join("external.data"), "{name}");
                assert!(message.contains(needle), "{name}: {message}");
            }
            e => panic!("{name}: {e:?}"),
        }
    }
}

#[test]
fn unsupported_graphs_name_the_node_and_the_supported_ops() {
    assert_unsupported("lstm", "lstm", "LSTM", onnx::SUPPORTED_OPS);
    // C with one row per batch row: at any other batch size it does not fit.
    match load_err("gemm_batch_c") {
        ModelError::Node {
            node,
            op_type,
            message,
        } => {
            assert_eq!((node.as_str(), op_type.as_str()), ("fc", "Gemm"));
            assert!(message.contains("does not broadcast"), "{message}");
        }
        e => panic!("{e:?}"),
    }
    assert_unsupported("conv3d", "conv", "Conv", "3-D windows are not supported");
    assert_graph("symbolic_hw", "symbolic (H)");
    let e = load_err("opset9");
    assert!(
        matches!(&e, ModelError::Opset { path: p, opset: 9, supported }
            if *p == path("opset9") && !supported.contains(&9)),
        "{e:?}"
    );
    assert!(e.to_string().contains("opset 9 is not supported"), "{e}");
}

/// Seeded xorshift: the same mutations on every run.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn corrupted_models_give_errors_not_panics() {
    let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15);
    let mut loaded = 0;
    let mut refused = 0;
    for name in ["conv_stack", "bn_fold", "torch_view11", "conv_attrs"] {
        let original = std::fs::read(path(name)).unwrap();
        let target = models_dir().join(format!("corrupt_{name}.onnx"));
        let mut cases: Vec<Vec<u8>> = (1..original.len())
            .step_by(37)
            .map(|n| original[..n].to_vec())
            .collect();
        for _ in 0..300 {
            let mut bytes = original.clone();
            for _ in 0..1 + rng.below(6) {
                let at = rng.below(bytes.len());
                bytes[at] = rng.next() as u8;
            }
            cases.push(bytes);
        }
        for bytes in cases {
            std::fs::write(&target, &bytes).unwrap();
            let result = std::panic::catch_unwind(|| {
                onnx::load(&target).and_then(|m| {
                    // Whatever loaded must be usable: shapes and every weight.
                    m.spec(2)?;
                    for w in m.weights() {
                        w.read()?;
                    }
                    Ok(())
                })
            });
            match result {
                Ok(Ok(())) => loaded += 1,
                Ok(Err(_)) => refused += 1,
                Err(_) => panic!(
                    "{name}: panicked on a corrupted file (kept at {})",
                    target.display()
                ),
            }
        }
    }
    assert!(
        loaded > 0 && refused > 0,
        "{loaded} loaded, {refused} refused"
    );
}
