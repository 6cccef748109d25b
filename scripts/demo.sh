#!/usr/bin/env bash
# The main job on the bundled examples: each model under `mpirun -n 2` with
# every strategy, checked against ONNX Runtime on the same files, then a short
# look at the collectives against MPI's own.
set -euo pipefail

# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

if [ ! -x target/release/mpinfer ] || [ ! -x .venv/bin/python ]; then
    bash scripts/setup.sh
fi
out=target/demo
mkdir -p "$out"
py=.venv/bin/python

echo "== handwritten digits (MLP trained on scikit-learn's digits), 2 ranks"
for strategy in data tensor pipeline auto; do
    printf '%-9s ' "$strategy:"
    mpirun -n 2 target/release/mpinfer run --strategy "$strategy" \
        --model examples/digits/model.onnx --input examples/digits/images.npy \
        --labels examples/digits/labels.npy --output "$out/digits-$strategy.npy" 2>/dev/null
done
"$py" - <<'PY'
import numpy as np, onnxruntime as ort
s = ort.InferenceSession("examples/digits/model.onnx", providers=["CPUExecutionProvider"])
x = np.load("examples/digits/images.npy"); labels = np.load("examples/digits/labels.npy")
pred = s.run(None, {s.get_inputs()[0].name: x})[0].argmax(1)
print(f"ONNX Runtime: accuracy: {100 * (pred == labels).mean():.2f}% ({(pred == labels).sum()}/{len(labels)})")
PY

echo
echo "== seed network (conv 1-32-64, avgpool, linear 3136-100-10), 2 ranks"
for strategy in data tensor pipeline; do
    mpirun -n 2 target/release/mpinfer run --strategy "$strategy" \
        --model examples/seed_net/seed_net.onnx --input examples/seed_net/images.npy \
        --output "$out/seed-$strategy.npy" 2>&1 | grep '^run: [0-9]* rows' || true
done
"$py" - "$out" <<'PY'
import sys, numpy as np, onnxruntime as ort
s = ort.InferenceSession("examples/seed_net/seed_net.onnx", providers=["CPUExecutionProvider"])
x = np.load("examples/seed_net/images.npy")
want = s.run(None, {s.get_inputs()[0].name: x})[0]
for strategy in ["data", "tensor", "pipeline"]:
    got = np.load(f"{sys.argv[1]}/seed-{strategy}.npy")
    err = np.abs(got - want).max() / np.abs(want).max()
    print(f"{strategy:<9} output {got.shape}, largest difference from ONNX Runtime {err:.1e} (relative)")
PY

echo
echo "== our allreduce against MPI's own, 2 ranks"
mpirun -n 2 target/release/mpinfer bench collectives \
    --op allreduce --algo auto,mpi -b 1K -e 4M -f 16 --check
