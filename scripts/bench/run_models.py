"""Inputs and yardsticks for scripts/bench-run.sh.

    python scripts/bench/run_models.py seed-input DIR ROWS
        DIR/seed-ROWS.npy: ROWS seed-network images
    python scripts/bench/run_models.py mlp DIR
        DIR/mlp.onnx: 784-4096-4096-10 MLP (Gemm, transB=1, as PyTorch exports
        Linear), DIR/mlp-input.npy: 512 rows
    python scripts/bench/run_models.py deep DIR
        DIR/deep.onnx: 8 Gemm+Relu layers of 1024 -> 1024 (equal stages for any
        power-of-two split), DIR/deep-input.npy: 2048 rows
    python scripts/bench/run_models.py ort MODEL INPUT OUTPUT THREADS
        ONNX Runtime as a whole process would run it: load, run, save
"""
import sys

import numpy as np


def seed_input(out, rows):
    x = np.random.default_rng(3).uniform(0, 1, size=(rows, 1, 32, 32)).astype(np.float32)
    np.save(f"{out}/seed-{rows}.npy", x)


def mlp(out, sizes=(784, 4096, 4096, 10), name="mlp", rows=512):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    inits, nodes, prev = [], [], "x"
    for i, (k, n) in enumerate(zip(sizes, sizes[1:])):
        bound = 1 / np.sqrt(k)
        inits.append(numpy_helper.from_array(rng.uniform(-bound, bound, (n, k)).astype(np.float32), f"w{i}"))
        inits.append(numpy_helper.from_array(rng.uniform(-bound, bound, n).astype(np.float32), f"b{i}"))
        out_name = "y" if i == len(sizes) - 2 else f"g{i}"
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [out_name], transB=1))
        prev = out_name
        if out_name != "y":
            nodes.append(helper.make_node("Relu", [prev], [f"r{i}"]))
            prev = f"r{i}"
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", sizes[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", sizes[-1]])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, f"{out}/{name}.onnx")
    np.save(f"{out}/{name}-input.npy", rng.uniform(0, 1, (rows, sizes[0])).astype(np.float32))


def ort(model, inp, out, threads):
    import onnxruntime as rt

    opts = rt.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    s = rt.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    x = np.load(inp)
    np.save(out, s.run(None, {s.get_inputs()[0].name: x})[0])


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "seed-input":
        seed_input(sys.argv[2], int(sys.argv[3]))
    elif cmd == "mlp":
        mlp(sys.argv[2])
    elif cmd == "deep":
        mlp(sys.argv[2], sizes=(1024,) * 9, name="deep", rows=2048)
    elif cmd == "ort":
        ort(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        sys.exit(__doc__)
