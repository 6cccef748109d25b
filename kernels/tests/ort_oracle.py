"""One ONNX operator run through ONNX Runtime, for the kernel tests.

    python ort_oracle.py OP ATTRS_JSON OPSET OUT.bin IN0.bin DIMS0 [IN1.bin DIMS1 ...]

Inputs are raw little-endian f32 files with comma-separated dims ("-" for a
scalar); the output is written the same way and its dims printed on stdout.
"""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper


def main(argv):
    op, attrs, opset, out_path = argv[0], json.loads(argv[1]), int(argv[2]), argv[3]
    pairs = list(zip(argv[4::2], argv[5::2]))
    feeds, infos, names = {}, [], []
    for i, (path, dims) in enumerate(pairs):
        shape = [] if dims == "-" else [int(d) for d in dims.split(",")]
        name = f"in{i}"
        feeds[name] = np.fromfile(path, dtype="<f4").reshape(shape)
        infos.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
        names.append(name)
    node = helper.make_node(op, names, ["out"], **attrs)
    out_info = helper.make_empty_tensor_value_info("out")
    graph = helper.make_graph([node], "one_op", infos, [out_info])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    # The output shape is left for ONNX Runtime to infer.
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    out = sess.run(None, feeds)[0].astype("<f4")
    out.tofile(out_path)
    print(",".join(str(d) for d in out.shape))


if __name__ == "__main__":
    main(sys.argv[1:])
