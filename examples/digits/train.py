"""A digit classifier trained on real data, for `mpinfer run --labels`.

    .venv/bin/python examples/digits/train.py [DIR]

Trains a 64-64-10 MLP on scikit-learn's bundled 8x8 handwritten digits (no
download), holds out 360 images, and writes to DIR (default: this folder):

    model.onnx   x [N,1,8,8] -> Flatten -> Gemm 64->64 -> Relu -> Gemm 64->10 -> Softmax -> y [N,10]
    images.npy   the held-out images, float32 [360,1,8,8], pixels scaled to [0,1]
    labels.npy   their digits, int64 [360]

then prints the held-out accuracy as ONNX Runtime computes it from those files.
Re-running gives byte-identical files: the split and the initial weights are
seeded, and training runs on one BLAS thread, so that no sum is reordered.
"""
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_limits

TEST_IMAGES = 360
HIDDEN = 64
SEED = 0


def train():
    digits = load_digits()
    # The raw pixels are integers 0..16.
    x = (digits.images / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_IMAGES, random_state=SEED, stratify=y
    )
    clf = MLPClassifier(
        hidden_layer_sizes=(HIDDEN,),
        activation="relu",
        solver="adam",
        alpha=1e-3,
        max_iter=1000,
        random_state=SEED,
    )
    with threadpool_limits(1):
        clf.fit(x_train.reshape(len(x_train), -1).astype(np.float64), y_train)
    return clf, x_test[:, None, :, :], y_test


def export(clf):
    # scikit-learn keeps weights as [in, out]; a PyTorch Linear exports them as
    # [out, in] with transB=1, which is the layout this graph copies.
    w1, w2 = (w.T.astype(np.float32) for w in clf.coefs_)
    b1, b2 = (b.astype(np.float32) for b in clf.intercepts_)
    inits = [
        numpy_helper.from_array(w1, "fc1.weight"),
        numpy_helper.from_array(b1, "fc1.bias"),
        numpy_helper.from_array(w2, "fc2.weight"),
        numpy_helper.from_array(b2, "fc2.bias"),
    ]
    nodes = [
        helper.make_node("Flatten", ["x"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "fc1.weight", "fc1.bias"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["hr"]),
        helper.make_node("Gemm", ["hr", "fc2.weight", "fc2.bias"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["y"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "digits_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="digits-train"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main(out):
    clf, images, labels = train()
    model = export(clf)
    model_path = os.path.join(out, "model.onnx")
    onnx.save(model, model_path)
    np.save(os.path.join(out, "images.npy"), images.astype(np.float32))
    np.save(os.path.join(out, "labels.npy"), labels.astype(np.int64))

    sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    probs = sess.run(None, {"x": np.load(os.path.join(out, "images.npy"))})[0]
    predicted = probs.argmax(axis=1)
    correct = int((predicted == np.load(os.path.join(out, "labels.npy"))).sum())
    sk = clf.predict(images.reshape(len(images), -1).astype(np.float64))
    if (sk != predicted).any():
        sys.exit("error: the exported model disagrees with scikit-learn's predictions")
    print(f"accuracy: {100.0 * correct / len(labels):.2f}% ({correct}/{len(labels)})")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__)))
