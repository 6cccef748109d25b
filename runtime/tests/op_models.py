"""One small graph per op and attribute combination, with ONNX Runtime's output.

    .venv/bin/python runtime/tests/op_models.py OUT_DIR

Writes NAME.onnx, NAME.in.npy (a batch of 5) and NAME.out.npy (ONNX
Runtime's output) for every case, and cases.txt listing the names. Inputs
are seeded, so each run writes the same files. runtime/tests/ops.rs runs each
case in one process and on every strategy, 1 to 4 ranks, against these.
"""
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OUT = sys.argv[1]
rng = np.random.default_rng(2024)
names = []


def rand(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def ints(name, values):
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


def floats(name, values):
    return numpy_helper.from_array(np.asarray(values, dtype=np.float32), name)


def case(name, nodes, sample, inits=(), opset=17, x=None, out_shape=None):
    """A graph from input x (batch N, then `sample`) to the last node's first
    output, y."""
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *sample])],
        [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, out_shape)],
        initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    # Inference fills in the output's type, which the checker requires.
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        sys.exit(f"{name}: {e}")
    path = os.path.join(OUT, f"{name}.onnx")
    onnx.save(model, path)
    x = rand(5, *sample) if x is None else x
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    y = session.run(None, {"x": x})[0]
    np.save(os.path.join(OUT, f"{name}.in.npy"), x)
    np.save(os.path.join(OUT, f"{name}.out.npy"), y.astype(np.float32))
    names.append(name)


def n(op, inputs, output="y", **attrs):
    return helper.make_node(op, inputs, [output], name=output, **attrs)


def convs():
    w = floats("w", rand(6, 2, 3, 3, scale=0.3))
    b = floats("b", rand(6))
    for pad in ["SAME_UPPER", "SAME_LOWER", "VALID"]:
        case(f"conv_{pad.lower()}", [n("Conv", ["x", "w", "b"], auto_pad=pad, strides=[2, 2])],
             [2, 7, 8], [w, b])
    case("conv_dilated_pads", [n("Conv", ["x", "w"], dilations=[2, 1], pads=[2, 0, 1, 3])],
         [2, 9, 7], [w])
    wg = floats("wg", rand(6, 2, 3, 3, scale=0.3))
    case("conv_groups_strided", [n("Conv", ["x", "wg"], group=2, strides=[2, 1], pads=[1, 1, 1, 1])],
         [4, 7, 6], [wg])
    w1 = floats("w1", rand(5, 3, 3, scale=0.3))
    case("conv1d", [n("Conv", ["x", "w1"], pads=[1, 2], dilations=[2], strides=[2])], [3, 11],
         [w1])
    case("conv1d_same", [n("Conv", ["x", "w1"], auto_pad="SAME_UPPER")], [3, 10], [w1])
    dw = floats("dw", rand(4, 1, 7, 7, scale=0.3))
    case("conv_depthwise_wide_kernel", [n("Conv", ["x", "dw"], group=4, pads=[3, 3, 3, 3])],
         [4, 2, 2], [dw])


def pools():
    case("maxpool_ceil", [n("MaxPool", ["x"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1,
                            pads=[1, 0, 1, 1])], [2, 8, 9])
    case("maxpool_dilated", [n("MaxPool", ["x"], kernel_shape=[2, 2], dilations=[2, 2])],
         [2, 7, 7])
    case("maxpool_same", [n("MaxPool", ["x"], kernel_shape=[3, 2], strides=[2, 2],
                            auto_pad="SAME_UPPER")], [2, 7, 9])
    case("avgpool_include_pad", [n("AveragePool", ["x"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                                   count_include_pad=1)], [2, 6, 5])
    case("avgpool_exclude_pad_ceil", [n("AveragePool", ["x"], kernel_shape=[2, 3], strides=[2, 2],
                                        pads=[0, 1, 1, 0], ceil_mode=1)], [2, 7, 8])
    case("avgpool1d", [n("AveragePool", ["x"], kernel_shape=[3], strides=[2], pads=[1, 1])],
         [3, 10])
    case("maxpool1d", [n("MaxPool", ["x"], kernel_shape=[2], strides=[1])], [3, 9])
    case("global_max_pool", [n("GlobalMaxPool", ["x"])], [3, 4, 5])
    case("global_average_pool_1d", [n("GlobalAveragePool", ["x"])], [3, 7])


def elementwise():
    shape = [3, 4, 5]
    for op in ["Add", "Sub", "Mul", "Div", "Max", "Min"]:
        case(f"{op.lower()}_channel", [n(op, ["x", "c"])], shape, [floats("c", rand(3, 1, 1) + 2)])
    case("add_last_axis_left", [n("Add", ["c", "x"])], shape, [floats("c", rand(5))])
    case("mul_middle", [n("Mul", ["x", "c"])], shape, [floats("c", rand(1, 4, 1))])
    case("add_residual", [n("Relu", ["x"], "r"), n("Add", ["r", "x"])], shape)
    case("mul_of_two_values", [n("Sigmoid", ["x"], "s"), n("Mul", ["x", "s"])], shape)
    case("pow_square", [n("Pow", ["x", "e"])], shape, [floats("e", 2.0)])
    case("pow_sqrt", [n("Abs", ["x"], "a"), n("Pow", ["a", "e"])], shape, [floats("e", 0.5)])
    case("sqrt", [n("Abs", ["x"], "a"), n("Sqrt", ["a"])], shape)
    for op in ["Erf", "Sigmoid", "Tanh", "HardSwish", "Exp", "Neg", "Abs", "Relu"]:
        case(op.lower(), [n(op, ["x"])], shape)
    case("log", [n("Abs", ["x"], "a"), n("Add", ["a", "one"], "p"), n("Log", ["p"])], shape,
         [floats("one", 1.0)])
    case("reciprocal", [n("Abs", ["x"], "a"), n("Add", ["a", "one"], "p"), n("Reciprocal", ["p"])],
         shape, [floats("one", 1.0)])
    case("hard_sigmoid", [n("HardSigmoid", ["x"], alpha=0.3, beta=0.4)], shape)
    case("leaky_relu", [n("LeakyRelu", ["x"], alpha=0.2)], shape)
    case("clip_both", [n("Clip", ["x", "lo", "hi"])], shape, [floats("lo", -0.5), floats("hi", 0.7)])
    case("clip_min_only", [n("Clip", ["x", "lo"])], shape, [floats("lo", 0.1)])
    for approx in ["none", "tanh"]:
        case(f"gelu_{approx}", [n("Gelu", ["x"], approximate=approx)], shape, opset=20)


def norms():
    case("layer_norm_last", [n("LayerNormalization", ["x", "s", "b"], axis=-1, epsilon=1e-3)],
         [4, 6], [floats("s", rand(6)), floats("b", rand(6))])
    case("layer_norm_two_axes", [n("LayerNormalization", ["x", "s"], axis=1)], [3, 4],
         [floats("s", rand(3, 4))])
    c = 3
    case("batch_norm_alone", [n("BatchNormalization", ["x", "g", "b", "m", "v"], epsilon=1e-3)],
         [c, 4, 4], [floats("g", rand(c)), floats("b", rand(c)), floats("m", rand(c)),
                     floats("v", np.abs(rand(c)) + 0.5)])
    case("batch_norm_after_relu", [n("Relu", ["x"], "r"),
                                   n("BatchNormalization", ["r", "g", "b", "m", "v"])],
         [c, 5], [floats("g", rand(c)), floats("b", rand(c)), floats("m", rand(c)),
                  floats("v", np.abs(rand(c)) + 0.5)])


def reductions():
    shape = [3, 4, 5]
    case("reduce_mean_attr", [n("ReduceMean", ["x"], axes=[2, 3], keepdims=1)], shape, opset=13)
    case("reduce_mean_input", [n("ReduceMean", ["x", "a"], keepdims=0)], shape, [ints("a", [-1])],
         opset=18)
    case("reduce_sum_input", [n("ReduceSum", ["x", "a"])], shape, [ints("a", [1, -1])], opset=13)
    case("reduce_max_attr", [n("ReduceMax", ["x"], axes=[-2], keepdims=0)], shape, opset=13)
    case("reduce_min_input", [n("ReduceMin", ["x", "a"], keepdims=1)], shape, [ints("a", [2])],
         opset=18)
    case("reduce_sum_noop", [n("ReduceSum", ["x", "a"], noop_with_empty_axes=1)], shape,
         [ints("a", [])], opset=13)
    case("softmax_axis1_3d", [n("Softmax", ["x"], axis=1)], [4, 6])
    case("softmax_coerced", [n("Softmax", ["x"], axis=2)], [3, 4], opset=11)


def movement():
    shape = [3, 4, 5]
    case("transpose_perm", [n("Transpose", ["x"], perm=[0, 3, 1, 2])], shape)
    case("concat_channels", [n("Relu", ["x"], "r"), n("Concat", ["x", "r", "x"], axis=1)], shape)
    case("concat_last_negative", [n("Neg", ["x"], "r"), n("Concat", ["r", "x"], axis=-1)], shape)
    case("split_input_then_concat",
         [helper.make_node("Split", ["x", "s"], ["p", "q"], name="split", axis=1),
          n("Concat", ["q", "p"], axis=1)], shape, [ints("s", [1, 2])], opset=13)
    case("split_num_outputs_then_add",
         [helper.make_node("Split", ["x"], ["p", "q", "r"], name="split", axis=3, num_outputs=3),
          n("Concat", ["r", "q", "p"], "c", axis=3), n("Add", ["c", "x"])], [3, 4, 7], opset=18)
    case("slice_steps", [n("Slice", ["x", "st", "en", "ax", "sp"])], shape,
         [ints("st", [0, -1]), ints("en", [3, -5]), ints("ax", [1, 3]), ints("sp", [2, -2])])
    case("slice_clamped", [n("Slice", ["x", "st", "en", "ax"])], shape,
         [ints("st", [1, -100]), ints("en", [100, 3]), ints("ax", [2, -1])])
    case("squeeze_unsqueeze", [n("Unsqueeze", ["x", "a"], "u"), n("Relu", ["u"], "r"),
                               n("Squeeze", ["r", "a"])], shape, [ints("a", [2, -1])])
    case("expand_constant", [n("Expand", ["c", "s"], "e"), n("Add", ["x", "e"])], shape,
         [floats("c", rand(4, 1)), ints("s", [3, 4, 5])])
    case("flatten_axis1", [n("Flatten", ["x"], axis=1)], shape)
    case("flatten_negative", [n("Flatten", ["x"], axis=-3)], shape)
    case("reshape_computed",
         [n("Shape", ["x"], "s"), n("Gather", ["s", "zero"], "n0", axis=0),
          n("Unsqueeze", ["n0", "ax"], "n"), n("Concat", ["n", "rest"], "t", axis=0),
          n("Reshape", ["x", "t"])], shape,
         [ints("zero", 0), ints("ax", [0]), ints("rest", [5, 12])], opset=13,
         out_shape=["N", 5, 12])
    case("gather_class_token", [n("Gather", ["x", "i"], axis=1)], [4, 6], [ints("i", 0)])
    case("gather_indices", [n("Gather", ["x", "i"], axis=-1)], [4, 6], [ints("i", [[5, 0], [-1, 2]])])


def matmuls():
    case("matmul_batched", [n("Transpose", ["x"], "t", perm=[0, 1, 3, 2]), n("MatMul", ["x", "t"])],
         [3, 4, 5])
    case("matmul_broadcast_weight", [n("MatMul", ["x", "w"])], [3, 4, 5],
         [floats("w", rand(5, 6))])
    case("matmul_bias_3d", [n("MatMul", ["x", "w"], "m"), n("Add", ["m", "b"])], [4, 5],
         [floats("w", rand(5, 6)), floats("b", rand(6))])
    case("matmul_batched_constant", [n("MatMul", ["x", "w"])], [2, 4, 5],
         [floats("w", rand(2, 5, 3))])
    case("gemm_trans_alpha_beta", [n("Gemm", ["x", "w", "c"], transB=1, alpha=0.5, beta=2.0)],
         [5], [floats("w", rand(4, 5)), floats("c", rand(4))])


def tensor_parallel():
    """Graphs whose splits must survive tensor parallelism: attention split
    by heads, and concatenations of split channels."""
    e, h, d = 16, 4, 4
    s_len = 5
    qkv = [floats("wqkv", rand(e, 3 * e, scale=0.3)), floats("bqkv", rand(3 * e, scale=0.1)),
           floats("wo", rand(e, e, scale=0.3)), floats("bo", rand(e, scale=0.1)),
           ints("heads", [0, s_len, 3, h, d]), ints("merged", [0, s_len, e]),
           floats("scale", 1.0 / np.sqrt(d)), ints("q", 0), ints("k", 1), ints("v", 2)]
    case("attention_heads", [
        n("MatMul", ["x", "wqkv"], "p"), n("Add", ["p", "bqkv"], "pb"),
        n("Reshape", ["pb", "heads"], "ph"),
        n("Transpose", ["ph"], "t", perm=[2, 0, 3, 1, 4]),
        n("Gather", ["t", "q"], "tq", axis=0), n("Gather", ["t", "k"], "tk", axis=0),
        n("Gather", ["t", "v"], "tv", axis=0),
        n("Transpose", ["tk"], "kt", perm=[0, 1, 3, 2]),
        n("MatMul", ["tq", "kt"], "qk"), n("Mul", ["qk", "scale"], "qks"),
        n("Softmax", ["qks"], "a", axis=-1), n("MatMul", ["a", "tv"], "av"),
        n("Transpose", ["av"], "at", perm=[0, 2, 1, 3]), n("Reshape", ["at", "merged"], "m"),
        n("MatMul", ["m", "wo"], "o"), n("Add", ["o", "bo"])], [s_len, e], qkv)
    w1, w2 = floats("w1", rand(4, 3, 3, 3, scale=0.3)), floats("w2", rand(6, 3, 1, 1, scale=0.3))
    bn = [floats(nm, v) for nm, v in [("g", rand(10)), ("bt", rand(10)), ("mu", rand(10)),
                                       ("var", np.abs(rand(10)) + 0.5)]]
    branches = [n("Conv", ["x", "w1"], "c1", pads=[1, 1, 1, 1]), n("Conv", ["x", "w2"], "c2"),
                n("Concat", ["c1", "c2"], "cat", axis=1),
                n("BatchNormalization", ["cat", "g", "bt", "mu", "var"], "bn"),
                n("Relu", ["bn"], "r")]
    case("concat_split_channels_conv",
         branches + [n("Conv", ["r", "w3"])], [3, 6, 6],
         [w1, w2, *bn, floats("w3", rand(2, 10, 1, 1, scale=0.3))])
    case("concat_split_channels_linear",
         branches + [n("Flatten", ["r"], "f"), n("Gemm", ["f", "wl", "bl"], transB=1)], [3, 6, 6],
         [w1, w2, *bn, floats("wl", rand(7, 360, scale=0.05)), floats("bl", rand(7))])


convs()
pools()
elementwise()
norms()
reductions()
movement()
matmuls()
tensor_parallel()
with open(os.path.join(OUT, "cases.txt"), "w") as f:
    f.write("\n".join(names) + "\n")
