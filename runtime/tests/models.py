"""Writes the ONNX models that runtime/tests/onnx_import.rs loads.

Usage: models.py OUT_DIR

For each model NAME it writes NAME.onnx and, for the tests to compare with:
- NAME.<tensor>.npy: an initializer's values as float32 (or a value the
  importer should compute, such as a folded BatchNormalization),
- NAME.shapes.txt: "output d0 d1 ..." per node output, as ONNX Runtime
  computes them for a batch of 2 (models it can run).
Bad models (truncated, random bytes, unsupported graphs) are written too.
Everything is seeded, so each run writes the same files.
"""

import os
import sys

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OUT = sys.argv[1]
rng = np.random.default_rng(0)


def rand(*shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def save_npy(name, key, value):
    np.save(os.path.join(OUT, f"{name}.{key}.npy"), np.asarray(value, dtype=np.float32))


def init(name, model, array, **kw):
    """An initializer stored as raw_data, its values saved for the test."""
    t = numpy_helper.from_array(np.asarray(array), name)
    save_npy(model, name, np.asarray(array).astype(np.float32))
    return t


def node(op, inputs, output, **attrs):
    """A node named after its output, as the importer names layers."""
    return helper.make_node(op, inputs, [output], name=output, **attrs)


def build(name, nodes, inits, shape, output, opset, elem=TensorProto.FLOAT, check=True, run=True,
          out_shape=None):
    x = helper.make_tensor_value_info("x", elem, shape)
    y = helper.make_tensor_value_info(output, elem, out_shape)
    graph = helper.make_graph(nodes, name, [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    if check:
        # Inference fills in the output's type, which the checker requires.
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        onnx.checker.check_model(model)
    path = os.path.join(OUT, f"{name}.onnx")
    onnx.save_model(model, path)
    if run:
        record_shapes(name, model, shape, elem)
    return model


def record_shapes(name, model, shape, elem):
    """Runs the model with every node output exposed and writes their shapes."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    m = onnx.ModelProto()
    m.CopyFrom(model)
    known = {o.name for o in m.graph.output}
    for n in m.graph.node:
        for out in n.output:
            if out and out not in known and out in types:
                m.graph.output.append(helper.make_tensor_value_info(out, types[out], None))
                known.add(out)
    session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    dtype = {TensorProto.FLOAT: np.float32, TensorProto.FLOAT16: np.float16}[elem]
    dims = [2] + [d for d in shape[1:]]
    outputs = session.run(None, {"x": rng.standard_normal(dims).astype(dtype)})
    with open(os.path.join(OUT, f"{name}.shapes.txt"), "w") as f:
        for o, v in zip(session.get_outputs(), outputs):
            f.write(" ".join([o.name] + [str(d) for d in np.shape(v)]) + "\n")


def conv_stack():
    name = "conv_stack"
    inits = [
        init("w1", name, rand(4, 3, 3, 3)),
        init("b1", name, rand(4)),
        init("w2", name, rand(10, 64)),
        init("c2", name, rand(10)),
    ]
    save_npy(name, "c2_times_beta", 2.0 * numpy_helper.to_array(inits[3]))
    nodes = [
        node("Conv", ["x", "w1", "b1"], "conv1", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        node("Relu", ["conv1"], "relu1"),
        node("MaxPool", ["relu1"], "pool1", kernel_shape=[2, 2], strides=[2, 2]),
        node("Flatten", ["pool1"], "flat"),
        node("Gemm", ["flat", "w2", "c2"], "fc", transB=1, alpha=0.5, beta=2.0),
        node("Softmax", ["fc"], "prob"),
    ]
    model = build(name, nodes, inits, ["N", 3, 8, 8], "prob", 13)
    # The same model as older exporters wrote it: initializers listed among
    # the graph inputs.
    for t in model.graph.initializer:
        model.graph.input.append(
            helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
        )
    onnx.save_model(model, os.path.join(OUT, "inits_as_inputs.onnx"))
    data = model.SerializeToString()
    with open(os.path.join(OUT, "truncated.onnx"), "wb") as f:
        f.write(data[: len(data) // 2])


def conv_attrs():
    name = "conv_attrs"
    inits = [
        init("wg", name, rand(6, 2, 3, 3)),
        init("wu", name, rand(4, 6, 3, 2)),
        init("wl", name, rand(4, 4, 2, 2)),
        init("wv", name, rand(4, 4, 1, 1)),
        init("bv", name, rand(4)),
    ]
    nodes = [
        node("Conv", ["x", "wg"], "grouped", group=2, dilations=[2, 1], strides=[2, 2],
             pads=[0, 1, 2, 1]),
        node("Conv", ["grouped", "wu"], "same_upper", auto_pad="SAME_UPPER", strides=[2, 2]),
        node("Conv", ["same_upper", "wl"], "same_lower", auto_pad="SAME_LOWER"),
        node("Conv", ["same_lower", "wv", "bv"], "valid", auto_pad="VALID"),
        node("AveragePool", ["valid"], "avg", kernel_shape=[2, 2], strides=[2, 1],
             pads=[1, 0, 0, 1], ceil_mode=1, count_include_pad=1),
        node("MaxPool", ["avg"], "maxd", kernel_shape=[2, 2], dilations=[1, 2]),
        node("GlobalAveragePool", ["maxd"], "gap"),
        node("Flatten", ["gap"], "flat", axis=-3),
    ]
    build(name, nodes, inits, ["batch", 4, 11, 10], "flat", 19)


def torch_view():
    """x.view(x.size(0), -1) as torch.onnx writes it, before and after opset 13."""
    for opset in (11, 13):
        name = f"torch_view{opset}"
        inits = [init("w", name, rand(3, 2, 3, 3)), init("fc", name, rand(12, 5))]
        nodes = [node("Conv", ["x", "w"], "conv")]
        if opset < 13:
            nodes += [
                helper.make_node("Constant", [], ["zero"], name="c0",
                                 value=numpy_helper.from_array(np.array(0, dtype=np.int64))),
                helper.make_node("Constant", [], ["minus1"], name="c1",
                                 value=numpy_helper.from_array(np.array([-1], dtype=np.int64))),
                helper.make_node("Shape", ["conv"], ["s"], name="shape"),
                helper.make_node("Gather", ["s", "zero"], ["g"], name="gather", axis=0),
                helper.make_node("Unsqueeze", ["g"], ["u"], name="unsqueeze", axes=[0]),
            ]
        else:
            inits += [
                numpy_helper.from_array(np.array(0, dtype=np.int64), "zero"),
                numpy_helper.from_array(np.array([-1], dtype=np.int64), "minus1"),
                numpy_helper.from_array(np.array([0], dtype=np.int64), "axes"),
            ]
            nodes += [
                helper.make_node("Shape", ["conv"], ["s"], name="shape"),
                helper.make_node("Gather", ["s", "zero"], ["g"], name="gather", axis=0),
                helper.make_node("Unsqueeze", ["g", "axes"], ["u"], name="unsqueeze"),
            ]
        nodes += [
            helper.make_node("Concat", ["u", "minus1"], ["target"], name="concat", axis=0),
            node("Reshape", ["conv", "target"], "view"),
            node("MatMul", ["view", "fc"], "out"),
        ]
        build(name, nodes, inits, ["N", 2, 4, 4], "out", opset, out_shape=["N", 5])

    # x.view(x.size(0), 3, -1) with Shape's end attribute (opset 15).
    name = "torch_view_keep"
    inits = [numpy_helper.from_array(np.array([3, -1], dtype=np.int64), "rest")]
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], name="shape", end=1),
        helper.make_node("Cast", ["s"], ["s64"], name="cast", to=TensorProto.INT64),
        helper.make_node("Concat", ["s64", "rest"], ["target"], name="concat", axis=0),
        node("Reshape", ["x", "target"], "view"),
        node("Softmax", ["view"], "prob", axis=1),
    ]
    build(name, nodes, inits, ["N", 6, 2, 2], "prob", 15, out_shape=["N", 3, 8])


def bn_fold():
    name = "bn_fold"
    w1, b1 = rand(5, 3, 3, 3), rand(5)
    g1, be1, m1 = rand(5), rand(5), rand(5)
    v1 = rng.uniform(0.5, 2.0, 5).astype(np.float32)
    w2 = rand(4, 5, 1, 1)
    g2, be2, m2 = rand(4), rand(4), rand(4)
    v2 = rng.uniform(0.5, 2.0, 4).astype(np.float32)
    inits = [
        init("w1", name, w1), init("b1", name, b1),
        init("g1", name, g1), init("be1", name, be1), init("m1", name, m1), init("v1", name, v1),
        init("w2", name, w2),
        init("g2", name, g2), init("be2", name, be2), init("m2", name, m2), init("v2", name, v2),
    ]
    nodes = [
        node("Conv", ["x", "w1", "b1"], "conv1", pads=[1, 1, 1, 1]),
        node("BatchNormalization", ["conv1", "g1", "be1", "m1", "v1"], "bn1", epsilon=1e-3),
        node("Relu", ["bn1"], "relu1"),
        node("Conv", ["relu1", "w2"], "conv2"),
        node("BatchNormalization", ["conv2", "g2", "be2", "m2", "v2"], "bn2"),
        node("GlobalAveragePool", ["bn2"], "gap"),
    ]
    for conv, w, b, g, be, m, v, eps in (
        ("conv1", w1, b1, g1, be1, m1, v1, 1e-3),
        ("conv2", w2, np.zeros(4, np.float32), g2, be2, m2, v2, 1e-5),
    ):
        scale = g.astype(np.float64) / np.sqrt(v.astype(np.float64) + eps)
        save_npy(name, f"{conv}.folded_w", w.astype(np.float64) * scale[:, None, None, None])
        save_npy(name, f"{conv}.folded_b", (b - m.astype(np.float64)) * scale + be)
    build(name, nodes, inits, ["N", 3, 6, 6], "gap", 15)


def matmul_add():
    name = "matmul_add"
    inits = [
        init("w1", name, rand(6, 4)), init("b1", name, rand(4)),
        init("w2", name, rand(4, 3)), init("b2", name, rand(1, 3)),
        init("w3", name, rand(3, 2)),
    ]
    nodes = [
        node("MatMul", ["x", "w1"], "mm1"),
        node("Add", ["mm1", "b1"], "add1"),
        node("Relu", ["add1"], "relu"),
        node("MatMul", ["relu", "w2"], "mm2"),
        node("Add", ["b2", "mm2"], "add2"),
        node("MatMul", ["add2", "w3"], "mm3"),
    ]
    build(name, nodes, inits, ["N", 6], "mm3", 13)


def softmax():
    build("softmax11", [node("Softmax", ["x"], "prob")], [], ["N", 3, 4], "prob", 11)
    build("softmax13", [node("Softmax", ["x"], "prob", axis=1)], [], ["N", 3, 4], "prob", 13)
    build("softmax21", [node("Softmax", ["x"], "prob")], [], ["N", 3, 4], "prob", 21,
          run=False)


def half_weights():
    # float16: raw_data and the int32_data bit form.
    name = "f16_model"
    b_raw, c_raw = rand(3, 4, dtype=np.float16), rand(3, dtype=np.float16)
    b_typed = helper.make_tensor("b_typed", TensorProto.FLOAT16, [3, 5],
                                 rand(15).astype(np.float16).astype(np.float32).tolist())
    c_typed = helper.make_tensor("c_typed", TensorProto.FLOAT16, [5],
                                 rand(5).astype(np.float16).astype(np.float32).tolist())
    assert b_typed.int32_data and not b_typed.raw_data
    for t in (b_typed, c_typed):
        save_npy(name, t.name, numpy_helper.to_array(t).astype(np.float32))
    inits = [init("b_raw", name, b_raw), init("c_raw", name, c_raw), b_typed, c_typed]
    nodes = [
        node("Gemm", ["x", "b_raw", "c_raw"], "f16raw", transB=1),
        node("Gemm", ["f16raw", "b_typed", "c_typed"], "f16typed"),
    ]
    build(name, nodes, inits, ["N", 4], "f16typed", 13, elem=TensorProto.FLOAT16)

    # bfloat16 (ONNX Runtime has no CPU Gemm for it: only checked).
    name = "bf16_model"
    b_raw = numpy_helper.from_array(rand(4, 3).astype(ml_dtypes.bfloat16), "b_raw")
    b_typed = helper.make_tensor("b_typed", TensorProto.BFLOAT16, [3, 2], rand(6).tolist())
    assert b_raw.raw_data and b_typed.int32_data and not b_typed.raw_data
    for t in (b_raw, b_typed):
        save_npy(name, t.name, numpy_helper.to_array(t).astype(np.float32))
    nodes = [
        node("Gemm", ["x", "b_raw"], "bf16raw"),
        node("Gemm", ["bf16raw", "b_typed"], "bf16typed"),
    ]
    build(name, nodes, [b_raw, b_typed], ["N", 4], "bf16typed", 13,
          elem=TensorProto.BFLOAT16, run=False)


def typed_f32():
    name = "typed_f32"
    w, b = rand(2, 3, 2, 2), rand(2)
    wt = helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.flatten().tolist())
    bt = helper.make_tensor("b", TensorProto.FLOAT, b.shape, b.tolist())
    assert wt.float_data and not wt.raw_data
    save_npy(name, "w", w)
    save_npy(name, "b", b)
    build(name, [node("Conv", ["x", "w", "b"], "conv")], [wt, bt], ["N", 3, 5, 5], "conv", 12)


def reshapes():
    name = "reshape_const"
    inits = [numpy_helper.from_array(np.array([0, -1], dtype=np.int64), "flat_shape")]
    nodes = [
        node("Reshape", ["x", "flat_shape"], "r1"),
        helper.make_node("Constant", [], ["s2"], name="c2",
                         value=numpy_helper.from_array(np.array([-1, 4, 6], dtype=np.int64))),
        node("Reshape", ["r1", "s2"], "r2"),
        helper.make_node("Constant", [], ["s3"], name="c3", value_ints=[0, 24]),
        node("Reshape", ["r2", "s3"], "r3"),
    ]
    build(name, nodes, inits, ["N", 2, 3, 4], "r3", 14)

    # Exported for batch 1 only: the 1 in the shape means "the batch".
    name = "reshape_fixed_batch"
    inits = [numpy_helper.from_array(np.array([1, -1], dtype=np.int64), "shape")]
    build(name, [node("Reshape", ["x", "shape"], "r")], inits, [1, 2, 3, 4], "r", 13, run=False)


def identity_dropout():
    name = "identity_dropout"
    inits = [
        init("w", name, rand(4, 3)),
        numpy_helper.from_array(np.array(0.5, dtype=np.float32), "ratio"),
        numpy_helper.from_array(np.array(False), "training"),
    ]
    nodes = [
        node("Identity", ["x"], "id1"),
        node("Dropout", ["id1", "ratio", "training"], "drop1"),
        node("Identity", ["w"], "w_alias"),
        node("Gemm", ["drop1", "w_alias"], "fc"),
        node("Dropout", ["fc"], "drop2"),
        node("Identity", ["drop2"], "out"),
    ]
    build(name, nodes, inits, ["N", 4], "out", 13)


def gemm_bias_forms():
    name = "gemm_bias"
    c1 = np.array(0.5, dtype=np.float32)
    c4 = np.array([[0.25]], dtype=np.float32)
    inits = [
        init("b1", name, rand(3, 4)), init("c1", name, c1),
        init("b2", name, rand(3, 2)), init("c2", name, rand(1, 2)),
        init("b3", name, rand(2, 2)), init("c3", name, rand(2)),
        init("b4", name, rand(2, 2)), init("c4", name, c4),
    ]
    nodes = [
        node("Gemm", ["x", "b1", "c1"], "scalar_c", transB=1, beta=3.0),
        node("Gemm", ["scalar_c", "b2", "c2"], "row_c"),
        node("Gemm", ["row_c", "b3", "c3"], "zero_beta", beta=0.0),
        node("Gemm", ["zero_beta", "b4", "c4"], "one_by_one", beta=2.0),
    ]
    build(name, nodes, inits, ["N", 4], "one_by_one", 13)


def graphs():
    """Graphs that are not chains: a residual Add, a value read twice with a
    dead branch beside it, and a BatchNormalization with no Conv before it."""
    build("add_two", [
        node("Relu", ["x"], "r"),
        node("Add", ["x", "r"], "residual"),
    ], [], ["N", 4], "residual", 13)

    build("branch", [
        node("Relu", ["x"], "a"),
        node("Relu", ["a"], "b"),
        node("Relu", ["a"], "c"),
    ], [], ["N", 4], "c", 13)

    build("bn_alone", [
        node("BatchNormalization", ["x", "s", "b", "m", "v"], "bn"),
    ], [numpy_helper.from_array(np.ones(3, np.float32), n) for n in "sbmv"],
        ["N", 3, 4, 4], "bn", 13)


def bad_models():
    with open(os.path.join(OUT, "random.onnx"), "wb") as f:
        f.write(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    open(os.path.join(OUT, "empty.onnx"), "wb").close()

    lstm_inits = [
        numpy_helper.from_array(rand(1, 16, 3), "W"),
        numpy_helper.from_array(rand(1, 16, 4), "R"),
    ]
    build("lstm", [helper.make_node("LSTM", ["x", "W", "R"], ["y"], name="lstm", hidden_size=4)],
          lstm_inits, [5, 2, 3], "y", 13, run=False)

    build("gemm_batch_c", [node("Gemm", ["x", "b", "c"], "fc")],
          [numpy_helper.from_array(rand(4, 3), "b"), numpy_helper.from_array(rand(2, 3), "c")],
          [2, 4], "fc", 13, run=False)

    build("conv3d", [node("Conv", ["x", "w"], "conv")],
          [numpy_helper.from_array(rand(2, 1, 2, 2, 2), "w")], ["N", 1, 4, 4, 4], "conv", 13,
          run=False)

    build("symbolic_hw", [node("Relu", ["x"], "r")], [], ["N", 3, "H", "W"], "r", 13, run=False)
    build("opset9", [node("Relu", ["x"], "r")], [], ["N", 3], "r", 9, run=False)

    # Dimensions far beyond the bytes present: refused before any allocation.
    for name, dims, raw in (
        ("huge_dims", [1 << 40, 1 << 40], b"\0" * 16),
        ("huge_count", [1 << 20, 1 << 10], b"\0" * 16),
        ("short_raw", [4, 3], b"\0" * 8),
    ):
        t = TensorProto(name="big", data_type=TensorProto.FLOAT, dims=dims, raw_data=raw)
        build(name, [node("MatMul", ["x", "big"], "mm")], [t], ["N", 4], "mm", 13,
              check=False, run=False)

    external_data()


def external_tensor(location, offset=None, length=None):
    t = TensorProto(name="ext", data_type=TensorProto.FLOAT, dims=[4, 3],
                    data_location=TensorProto.EXTERNAL)
    t.external_data.add(key="location", value=location)
    if offset is not None:
        t.external_data.add(key="offset", value=str(offset))
    if length is not None:
        t.external_data.add(key="length", value=str(length))
    return t


def external_data():
    """Weights in files beside the model: one that loads (its values behind
    another tensor's, at an offset, in a shared file; the Reshape target in
    the same file), and the ways a location can be wrong."""
    w = rand(4, 3)
    save_npy("external", "w", w)
    pad = b"\x7f" * 20  # another tensor's bytes before ours
    shape = np.array([0, 3], dtype=np.int64).tobytes()
    with open(os.path.join(OUT, "external.data"), "wb") as f:
        f.write(pad + w.tobytes() + shape)
    t = external_tensor("external.data", offset=len(pad), length=w.nbytes)
    s = TensorProto(name="shape", data_type=TensorProto.INT64, dims=[2],
                    data_location=TensorProto.EXTERNAL)
    s.external_data.add(key="location", value="./external.data")
    s.external_data.add(key="offset", value=str(len(pad) + w.nbytes))
    build("external", [node("MatMul", ["x", "ext"], "mm"), node("Reshape", ["mm", "shape"], "r")],
          [t, s], ["N", 4], "r", 13, check=False, run=False)

    def broken(name, location, **kw):
        build(name, [node("MatMul", ["x", "ext"], "mm")], [external_tensor(location, **kw)],
              ["N", 4], "mm", 13, check=False, run=False)

    broken("external_missing", "no_such.data")
    broken("external_climbs", "../external.data")
    broken("external_absolute", os.path.abspath(os.path.join(OUT, "external.data")))
    outside = os.path.join(os.path.dirname(os.path.abspath(OUT)), "outside.data")
    with open(outside, "wb") as f:
        f.write(w.tobytes())
    link = os.path.join(OUT, "link.data")
    if not os.path.lexists(link):
        os.symlink(outside, link)
    broken("external_link", "link.data")
    broken("external_short", "external.data", offset=20 + w.nbytes)
    broken("external_length", "external.data", offset=20, length=12)


def beyond_2gb():
    """A model over protobuf's 2 GB: its data file (sparse) holds a gap of
    2.5 GB between the first layer's weights and the rest, so offsets past
    2^31 are read. Two linear layers with biases, a ReLU between; NumPy's
    output is saved for a batch of 3."""
    k, h, n = 64, 512, 10
    w1, b1, w2, b2 = rand(k, h), rand(h), rand(h, n), rand(n)
    gap = 5 << 29
    path = os.path.join(OUT, "big.data")
    tensors, at = [], 0
    with open(path, "wb") as f:
        for name, v in [("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2)]:
            f.seek(at)
            f.write(v.tobytes())
            t = external_tensor("big.data", offset=at, length=v.nbytes)
            t.name, t.dims[:] = name, list(v.shape)
            tensors.append(t)
            at = (at + v.nbytes if name != "w1" else gap)
    nodes = [node("MatMul", ["x", "w1"], "m1"), node("Add", ["m1", "b1"], "a1"),
             node("Relu", ["a1"], "r1"), node("MatMul", ["r1", "w2"], "m2"),
             node("Add", ["m2", "b2"], "y")]
    build("big", nodes, tensors, ["N", k], "y", 13, check=False, run=False)
    x = rand(3, k)
    save_npy("big", "x", x)
    save_npy("big", "y", np.maximum(x @ w1 + b1, 0) @ w2 + b2)


conv_stack()
conv_attrs()
torch_view()
bn_fold()
matmul_add()
softmax()
half_weights()
typed_f32()
reshapes()
identity_dropout()
gemm_bias_forms()
graphs()
bad_models()
beyond_2gb()
