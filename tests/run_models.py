"""Models, inputs and ONNX Runtime's outputs for the end-to-end tests (tests/mpi_run.rs).

    .venv/bin/python tests/run_models.py OUT_DIR SEED

Writes into OUT_DIR small ONNX models built with onnx.helper (weights drawn
from SEED), their inputs as .npy, ONNX Runtime's outputs for them, and
manifest.json:

    {"cases":  [{"name", "model", "input", "expected", "shape", "rtol", "nan_rows",
                 "variants", "others": [{"suffix", "expected"}]}],
     "errors": [{"name", "model", "input", "mentions"}],
     "digits": {"model", "input", "labels", "accuracy_line"}}

Paths are relative to OUT_DIR except the digits example's, which are absolute.
`rtol` is the relative tolerance against ONNX Runtime; the test adds an
absolute floor proportional to the largest |expected|. `nan_rows` lists the
samples whose input holds a NaN: their output rows must be NaN and no other.
`variants` marks the cases also run with other schedules, rank weights and
bf16 transfers. `others` are a model's outputs after the first: mpinfer
writes each beside the output file, Y.npy as Y.SUFFIX.npy.
"""
import json
import os
import shutil
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "examples", "seed_net"))
import model as seed_net  # noqa: E402


class Builder:
    """A sequential graph: each node reads the previous node's output."""

    def __init__(self, rng, name):
        self.rng, self.name = rng, name
        self.nodes, self.inits, self.last, self.count = [], [], "x", 0

    def const(self, array, hint):
        name = f"{hint}_{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def weight(self, shape, fan_in, hint="w"):
        # He-uniform keeps activations near unit scale through the relus, so
        # the softmaxes are far from uniform and a wrong weight slice shows.
        bound = np.sqrt(6.0 / fan_in) if hint == "w" else 1.0 / np.sqrt(fan_in)
        return self.const(self.rng.uniform(-bound, bound, size=shape).astype(np.float32), hint)

    def op(self, op_type, extra_inputs=(), src=None, **attrs):
        self.count += 1
        out = f"t{self.count}_{op_type.lower()}"
        self.nodes.append(
            helper.make_node(op_type, [src or self.last, *extra_inputs], [out], **attrs)
        )
        self.last = out
        return out

    def conv(self, cin, cout, k, group=1, **attrs):
        w = self.weight((cout, cin // group, k, k), cin // group * k * k)
        b = self.weight((cout,), cin // group * k * k, "b")
        return self.op("Conv", [w, b], kernel_shape=[k, k], group=group, **attrs)

    def batchnorm(self, c):
        scale = self.const(self.rng.uniform(0.5, 1.5, c).astype(np.float32), "bn_scale")
        bias = self.const(self.rng.uniform(-0.2, 0.2, c).astype(np.float32), "bn_bias")
        mean = self.const(self.rng.uniform(-0.1, 0.1, c).astype(np.float32), "bn_mean")
        var = self.const(self.rng.uniform(0.5, 2.0, c).astype(np.float32), "bn_var")
        return self.op("BatchNormalization", [scale, bias, mean, var], epsilon=1e-5)

    def gemm(self, fin, fout):
        # PyTorch's Linear: weight [out, in], transB=1.
        w = self.weight((fout, fin), fin)
        b = self.weight((fout,), fin, "b")
        return self.op("Gemm", [w, b], transB=1)

    def matmul_add(self, fin, fout):
        w = self.weight((fin, fout), fin)
        b = self.weight((fout,), fin, "b")
        self.op("MatMul", [w])
        return self.op("Add", [b])

    def torch_view_flatten(self):
        """x.view(x.size(0), -1) as PyTorch exports it (opset 13+ Unsqueeze)."""
        src = self.last
        shape = self.op("Shape", src=src)
        batch = self.op("Gather", [self.const(np.array(0, dtype=np.int64), "idx")], axis=0)
        axes = self.const(np.array([0], dtype=np.int64), "axes")
        dim0 = self.op("Unsqueeze", [axes], src=batch)
        minus_one = self.const(np.array([-1], dtype=np.int64), "minus_one")
        self.op("Concat", [minus_one], src=dim0, axis=0)
        target = self.last
        self.count += 1
        out = f"t{self.count}_reshape"
        self.nodes.append(helper.make_node("Reshape", [src, target], [out]))
        self.last = out
        return out

    def finish(self, in_shape, out_shape, opset):
        self.nodes[-1].output[0] = "y"
        graph = helper.make_graph(
            self.nodes,
            self.name,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *in_shape])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", *out_shape])],
            self.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=True)
        return model


def conv_odd(rng):
    """Channel counts 3 -> 7 -> 5, no multiple of 2, 3 or 4 anywhere."""
    b = Builder(rng, "conv_odd")
    b.conv(3, 7, 3, pads=[1, 1, 1, 1], strides=[2, 2])  # 13x13 -> 7x7
    b.batchnorm(7)
    b.op("Relu")
    b.op("MaxPool", kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)  # 7x7 -> 4x4
    b.conv(7, 5, 3, pads=[1, 1, 1, 1])  # 4x4
    b.op("Relu")
    b.op("AveragePool", kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1],
         count_include_pad=1)  # 4x4 -> 3x3
    b.torch_view_flatten()  # 45
    b.gemm(45, 19)
    b.op("Relu")
    b.gemm(19, 6)
    b.op("Softmax", axis=-1)
    return b.finish([3, 13, 13], [6], 13), [3, 13, 13]


def mlp_matmul(rng):
    """MatMul + Add layers 37 -> 50 -> 23 -> 11 at opset 11, whose Softmax
    coerces its input to 2-D at `axis`."""
    b = Builder(rng, "mlp_matmul")
    b.matmul_add(37, 50)
    b.op("Relu")
    b.matmul_add(50, 23)
    b.op("Relu")
    b.matmul_add(23, 11)
    b.op("Softmax", axis=1)
    return b.finish([37], [11], 11), [37]


def grouped(rng):
    """Depthwise then grouped convolution, global average pooling, a classifier."""
    b = Builder(rng, "grouped")
    b.conv(6, 6, 3, group=6, pads=[1, 1, 1, 1])  # depthwise, 9x9
    b.op("Relu")
    b.conv(6, 9, 3, group=3, strides=[2, 2])  # 9x9 -> 4x4
    b.op("Relu")
    b.op("GlobalAveragePool")
    b.op("Flatten", axis=1)
    b.op("Dropout")
    b.gemm(9, 4)
    b.op("Identity")
    return b.finish([6, 9, 9], [4], 17), [6, 9, 9]


def unsupported(rng):
    b = Builder(rng, "unsupported")
    b.matmul_add(37, 8)
    b.op("Sin")
    return b.finish([37], [8], 13)


def three_outputs(rng):
    """A graph with three outputs of different shapes, one named with
    characters a file name should not hold."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 37])
    shapes = {"logits": ["N", 5], "hidden": ["N", 16], "out/score:0": ["N", 1]}
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in shapes.items()]
    w = [numpy_helper.from_array((rng.standard_normal(s) * 0.3).astype(np.float32), n)
         for n, s in [("w1", (37, 16)), ("b1", (16,)), ("w2", (16, 5))]]
    w.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"))
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["m1"]),
             helper.make_node("Add", ["m1", "b1"], ["a1"]),
             helper.make_node("Relu", ["a1"], ["hidden"]),
             helper.make_node("MatMul", ["hidden", "w2"], ["logits"]),
             helper.make_node("ReduceSum", ["logits", "axes"], ["out/score:0"], keepdims=1)]
    graph = helper.make_graph(nodes, "three", [x], outs, initializer=w)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def run_ort(path, x):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return names, [y.astype(np.float32) for y in sess.run(None, {"x": x})]


def digits_accuracy():
    d = os.path.join(ROOT, "examples", "digits")
    paths = {k: os.path.join(d, f) for k, f in
             [("model", "model.onnx"), ("input", "images.npy"), ("labels", "labels.npy")]}
    probs = run_ort(paths["model"], np.load(paths["input"]))[1][0]
    labels = np.load(paths["labels"])
    correct = int((probs.argmax(axis=1) == labels).sum())
    paths["accuracy_line"] = (
        f"accuracy: {100.0 * correct / len(labels):.2f}% ({correct}/{len(labels)})"
    )
    return paths


def main(out, seed):
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(seed)
    cases, errors = [], []

    def model_file(name, model):
        onnx.save(model, os.path.join(out, f"{name}.onnx"))
        return f"{name}.onnx"

    def external_file(name, model):
        """Every tensor in NAME.onnx.data beside the model, as the default
        torch.onnx exporter writes them."""
        m = onnx.ModelProto()
        m.CopyFrom(model)
        onnx.save_model(m, os.path.join(out, f"{name}.onnx"), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=f"{name}.onnx.data",
                        size_threshold=0)
        return f"{name}.onnx"

    def case(name, model, x, rtol=1e-4, nan_rows=(), variants=False):
        np.save(os.path.join(out, f"{name}.in.npy"), x)
        names, ys = run_ort(os.path.join(out, model), x)
        y = ys[0]
        np.save(os.path.join(out, f"{name}.expected.npy"), y)
        bad = sorted({int(r) for r in np.argwhere(~np.isfinite(y))[:, 0]})
        if bad != sorted(nan_rows):
            sys.exit(f"{name}: ONNX Runtime gives non-finite rows {bad}, not {list(nan_rows)}")
        # Outputs after the first: the file name mpinfer gives each, and
        # ONNX Runtime's values.
        others = []
        for k, (oname, oy) in enumerate(zip(names[1:], ys[1:]), 1):
            np.save(os.path.join(out, f"{name}.expected.{k}.npy"), oy)
            clean = "".join(c if c.isalnum() or c in "_-" else "_" for c in oname)
            others.append({"suffix": clean, "expected": f"{name}.expected.{k}.npy"})
        cases.append({
            "name": name,
            "model": model,
            "input": f"{name}.in.npy",
            "expected": f"{name}.expected.npy",
            "shape": list(y.shape),
            "rtol": rtol,
            "nan_rows": list(nan_rows),
            "variants": variants,
            "others": others,
        })

    def inputs(shape, batch):
        return rng.uniform(-1, 1, size=(batch, *shape)).astype(np.float32)

    conv, conv_shape = conv_odd(rng)
    conv = model_file("conv_odd", conv)
    mlp, mlp_shape = mlp_matmul(rng)
    mlp = model_file("mlp_matmul", mlp)
    grp, grp_shape = grouped(rng)
    grp = model_file("grouped", grp)
    seed_model = seed_net.build(seed_net.weights())
    seed = model_file("seed_net", seed_model)
    seed_external = external_file("seed_net_external", seed_model)

    case("conv_odd_b13", conv, inputs(conv_shape, 13), variants=True)
    case("conv_odd_b1", conv, inputs(conv_shape, 1))
    case("mlp_b13", mlp, inputs(mlp_shape, 13), variants=True)
    case("mlp_b0", mlp, inputs(mlp_shape, 0))
    three = model_file("three_outputs", three_outputs(rng))
    case("three_outputs_b9", three, inputs([37], 9))
    x = inputs(mlp_shape, 7)
    x[4, 11] = np.nan
    case("mlp_nan_b7", mlp, x, nan_rows=[4])
    x = rng.uniform(0, 1, size=(5, 1, 32, 32)).astype(np.float32)
    case("seed_net_b5", seed, x, variants=True)
    case("seed_net_external_b5", seed_external, x)
    case("grouped_b11", grp, inputs(grp_shape, 11))

    # Small members of the torchvision families, exported by torch.onnx.export
    # with both exporters (tests/torch_models.py made them).
    torch_dir = os.path.join(HERE, "fixtures", "torch")
    x = inputs([3, 32, 32], 5)
    for f in sorted(os.listdir(torch_dir)):
        if not f.endswith(".onnx"):
            continue
        for part in (f, f + ".data"):
            if os.path.exists(os.path.join(torch_dir, part)):
                shutil.copy(os.path.join(torch_dir, part), os.path.join(out, part))
        family, exporter, _ = f.split(".")
        # One residual network also under the other schedules, rank weights
        # and transfer types, and bit for bit across rank counts.
        case(f"torch_{family}_{exporter}_b5", f, x,
             variants=(family, exporter) == ("resnet_basic", "dynamo"))

    # `mentions`: an `error:` line must name one of these (the file, node or
    # value at fault).
    def error(name, model, x, mentions):
        errors.append({"name": name, "model": model, "input": x, "mentions": mentions})

    error("missing_model", "no_such_model.onnx", "mlp_b13.in.npy", ["no_such_model.onnx"])
    error("missing_input", mlp, "no_such_input.npy", ["no_such_input.npy"])
    error("unsupported_op", model_file("unsupported", unsupported(rng)), "mlp_b13.in.npy",
          ["Sin"])
    np.save(os.path.join(out, "wrong_shape.npy"), inputs([36], 4))
    error("wrong_input_shape", mlp, "wrong_shape.npy", ["wrong_shape.npy", "36", "shape"])
    np.save(os.path.join(out, "uint8.npy"), rng.integers(0, 255, size=(4, 37), dtype=np.uint8))
    error("uint8_input", mlp, "uint8.npy", ["uint8", "u8", "u1"])
    with open(os.path.join(out, mlp), "rb") as f:
        whole = f.read()
    with open(os.path.join(out, "truncated.onnx"), "wb") as f:
        f.write(whole[: len(whole) * 2 // 3])
    error("truncated_model", "truncated.onnx", "mlp_b13.in.npy", ["truncated.onnx"])
    with open(os.path.join(out, "random.onnx"), "wb") as f:
        f.write(np.random.default_rng(99).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    error("random_bytes_model", "random.onnx", "mlp_b13.in.npy", ["random.onnx"])
    with open(os.path.join(out, "mlp_b13.in.npy"), "rb") as f:
        whole = f.read()
    with open(os.path.join(out, "truncated.npy"), "wb") as f:
        f.write(whole[: len(whole) - 100])
    error("truncated_input", mlp, "truncated.npy", ["truncated.npy"])

    # Long enough to stop part-way through (the fault tests slow a rank down).
    np.save(os.path.join(out, "seed_long.in.npy"),
            rng.uniform(0, 1, size=(768, 1, 32, 32)).astype(np.float32))
    faults = {"model": seed, "input": "seed_long.in.npy", "other_model": mlp}

    manifest = {"cases": cases, "errors": errors, "digits": digits_accuracy(), "faults": faults}
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], int(sys.argv[2]))
