"""The torchvision zoo, exported by torch.onnx.export, on mpinfer against ONNX Runtime.

    scripts/zoo.sh [--ranks N] [--models a,b,...] [--exporters legacy,dynamo] [--out docs/ZOO.md]

Run by scripts/zoo.sh with a Python that has torch, torchvision, onnx and
onnxruntime (not part of scripts/setup.sh: the wheels are large). Each model
is built with random weights, put in eval(), exported with a dynamic batch by
the TorchScript exporter (dynamo=False) and by today's default exporter
(dynamo=True, weights as external data), then run by `mpirun -n N mpinfer run`
under the data, tensor and pipeline strategies. A run passes when its output
has ONNX Runtime's shape and every element is within 1e-4 of the largest
|output| of ONNX Runtime's. Prints a table and writes it as Markdown.
"""
import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort
import torch
import torchvision

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# MPINFER_BIN runs another build (a copy, so that rebuilding does not change it mid-run).
MPINFER = os.environ.get("MPINFER_BIN", os.path.join(ROOT, "target", "release", "mpinfer"))
TOLERANCE = 1e-4

# Name and input size: 3x64x64 where the architecture allows, 224 for the
# ones whose pooling or patching needs it.
MODELS = [
    ("alexnet", 224), ("vgg11", 224), ("resnet18", 64), ("resnet50", 64),
    ("mobilenet_v2", 64), ("mobilenet_v3_small", 64), ("squeezenet1_0", 64),
    ("densenet121", 64), ("googlenet", 64), ("shufflenet_v2_x1_0", 64),
    ("efficientnet_b0", 64), ("regnet_y_400mf", 64), ("convnext_tiny", 64),
    ("vit_b_16", 224),
]
STRATEGIES = ["data", "tensor", "pipeline"]


def build(name):
    kwargs = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None, num_classes=10, **kwargs).eval()
    with torch.no_grad():
        # Heads initialised to zero (ViT's) would make every output equal.
        for p in model.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape) * 0.02)
    return model


def export(model, size, exporter, path):
    x = torch.randn(2, 3, size, size)
    if exporter == "legacy":
        torch.onnx.export(model, (x,), path, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "N"}, "y": {0: "N"}}, dynamo=False,
                          opset_version=17)
    else:
        batch = torch.export.Dim("batch", min=1, max=4096)
        torch.onnx.export(model, (x,), path, dynamic_shapes=({0: batch},), dynamo=True,
                          external_data=True)


def run(model_path, x_path, out_path, strategy, ranks):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    cmd = ["mpirun", "--oversubscribe", "-n", str(ranks), MPINFER, "run", "--model", model_path,
           "--input", x_path, "--output", out_path, "--strategy", strategy]
    started = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    errors = [l for l in p.stderr.splitlines() if "error:" in l]
    return p.returncode, time.time() - started, errors[0] if errors else p.stderr[-300:]


def check(name, size, exporter, ranks, work):
    path = os.path.join(work, f"{name}.{exporter}.onnx")
    try:
        export(build(name), size, exporter, path)
    except Exception as e:  # noqa: BLE001 - any export failure is a row of the table
        return [("export", "FAIL", f"{type(e).__name__}: {str(e).splitlines()[0][:120]}")]
    x = np.random.default_rng(1).standard_normal((4, 3, size, size)).astype(np.float32)
    x_path = os.path.join(work, "x.npy")
    np.save(x_path, x)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    want = session.run(None, {session.get_inputs()[0].name: x})[0]
    rows = []
    for strategy in STRATEGIES:
        out = os.path.join(work, "y.npy")
        code, took, err = run(path, x_path, out, strategy, ranks)
        if code != 0:
            rows.append((strategy, "FAIL", err.strip()[:160]))
            continue
        got = np.load(out)
        os.remove(out)
        if got.shape != want.shape:
            rows.append((strategy, "FAIL", f"shape {got.shape}, ONNX Runtime {want.shape}"))
            continue
        rel = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))
        verdict = "pass" if rel <= TOLERANCE else "FAIL"
        rows.append((strategy, verdict, f"max error {rel:.1e} of max |y|, {took:.1f} s"))
    for f in (path, path + ".data"):
        if os.path.exists(f):
            os.remove(f)
    return rows


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            return next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--models", default=",".join(n for n, _ in MODELS))
    ap.add_argument("--exporters", default="legacy,dynamo")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "ZOO.md"))
    args = ap.parse_args()
    sizes = dict(MODELS)
    lines = [
        "# The torchvision zoo on mpinfer",
        "",
        f"`scripts/zoo.sh --ranks {args.ranks}`: {cpu_name()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}, torchvision "
        f"{torchvision.__version__}, onnxruntime {ort.__version__}, {time.strftime('%Y-%m-%d')}. "
        f"Random weights, batch of 4, {args.ranks} ranks; pass = within {TOLERANCE:g} of the "
        "largest |output| of ONNX Runtime's.",
        "",
        "| model | input | exporter | strategy | result | detail |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    failed = 0
    with tempfile.TemporaryDirectory() as work:
        for name in args.models.split(","):
            for exporter in args.exporters.split(","):
                for strategy, verdict, detail in check(name, sizes[name], exporter, args.ranks,
                                                       work):
                    failed += verdict != "pass"
                    row = f"| {name} | 3x{sizes[name]}x{sizes[name]} | {exporter} | {strategy} " \
                          f"| {verdict} | {detail.replace('|', '/')} |"
                    print(row, flush=True)
                    lines.append(row)
    lines += ["", f"{failed} failed."]
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{failed} failed; table in {args.out}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
