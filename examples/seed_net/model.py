"""The seed network (docs: DESIGN.md) as an ONNX model with deterministic
weights, and ONNX Runtime as the yardstick for mpinfer's kernels.

    python examples/seed_net/model.py make DIR [--batch 256]
        writes DIR/seed_net.onnx, DIR/weights.bin (f32 little-endian: conv1.w,
        conv1.b, conv2.w, conv2.b, fc1.w, fc1.b, fc2.w, fc2.b), DIR/input.bin
        (batch x 1 x 32 x 32) and DIR/expected.bin (ONNX Runtime's output)
    python examples/seed_net/model.py time DIR THREADS REPEATS
        prints ONNX Runtime's images per second (median of REPEATS runs)
    python examples/seed_net/model.py example [DIR]
        writes DIR/seed_net.onnx and DIR/images.npy (64 x 1 x 32 x 32 f32), the
        files `mpinfer run` takes; DIR defaults to this script's folder, where
        both are kept. Re-running gives byte-identical files.
"""
import os
import statistics
import sys
import time

import numpy as np


def weights():
    rng = np.random.default_rng(2024)

    def uniform(shape, fan_in):
        bound = 1.0 / np.sqrt(fan_in)
        return rng.uniform(-bound, bound, size=shape).astype(np.float32)

    return [
        ("conv1.w", uniform((32, 1, 3, 3), 9)),
        ("conv1.b", uniform((32,), 9)),
        ("conv2.w", uniform((64, 32, 3, 3), 288)),
        ("conv2.b", uniform((64,), 288)),
        ("fc1.w", uniform((100, 3136), 3136)),
        ("fc1.b", uniform((100,), 3136)),
        ("fc2.w", uniform((10, 100), 100)),
        ("fc2.b", uniform((10,), 100)),
    ]


def build(ws):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(a, name) for name, a in ws]
    nodes = [
        helper.make_node("Conv", ["x", "conv1.w", "conv1.b"], ["c1"], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "conv2.w", "conv2.b"], ["c2"], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("AveragePool", ["r2"], ["p"], kernel_shape=[4, 4], strides=[4, 4]),
        helper.make_node("Flatten", ["p"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc1.w", "fc1.b"], ["g1"], transB=1),
        helper.make_node("Relu", ["g1"], ["r3"]),
        helper.make_node("Gemm", ["r3", "fc2.w", "fc2.b"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "seed_net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def session(path, threads):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def make(out, batch):
    import onnx

    ws = weights()
    onnx.save(build(ws), f"{out}/seed_net.onnx")
    with open(f"{out}/weights.bin", "wb") as f:
        for _, a in ws:
            f.write(a.astype("<f4").tobytes())
    x = images(batch)
    x.astype("<f4").tofile(f"{out}/input.bin")
    y = session(f"{out}/seed_net.onnx", 1).run(None, {"x": x})[0]
    y.astype("<f4").tofile(f"{out}/expected.bin")


def images(batch, seed=7):
    return np.random.default_rng(seed).uniform(0, 1, size=(batch, 1, 32, 32)).astype(np.float32)


def example(out):
    import onnx

    onnx.save(build(weights()), os.path.join(out, "seed_net.onnx"))
    np.save(os.path.join(out, "images.npy"), images(64))


def timed(out, threads, repeats):
    batch = np.fromfile(f"{out}/input.bin", dtype="<f4").size // (32 * 32)
    x = np.fromfile(f"{out}/input.bin", dtype="<f4").reshape(batch, 1, 32, 32)
    s = session(f"{out}/seed_net.onnx", threads)
    s.run(None, {"x": x})
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        s.run(None, {"x": x})
        rates.append(batch / (time.perf_counter() - t0))
    print(f"{statistics.median(rates):.1f}")


if __name__ == "__main__":
    if sys.argv[1] == "make":
        batch = int(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[3] == "--batch" else 256
        make(sys.argv[2], batch)
    elif sys.argv[1] == "time":
        timed(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif sys.argv[1] == "example":
        example(sys.argv[2] if len(sys.argv) > 2 else os.path.dirname(os.path.abspath(__file__)))
    else:
        sys.exit(__doc__)
