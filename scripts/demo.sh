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
# Outputs of an earlier demo must not stand in for a run that failed now.
rm -rf "$out"
mkdir -p "$out"
py=.venv/bin/python

# One job on 2 ranks, everything it prints kept in LOG; a failed job shows
# its log and ends the demo.
job() {
    local log=$1
    shift
    if ! mpirun -n 2 target/release/mpinfer "$@" >"$log" 2>&1; then
        echo "error: mpirun -n 2 target/release/mpinfer $* failed:" >&2
        cat "$log" >&2
        exit 1
    fi
}

echo "== handwritten digits (MLP trained on scikit-learn's digits), 2 ranks"
for strategy in data tensor pipeline auto; do
    job "$out/digits-$strategy.log" run --strategy "$strategy" \
        --model examples/digits/model.onnx --input examples/digits/images.npy \
        --labels examples/digits/labels.npy --output "$out/digits-$strategy.npy"
    printf '%-9s %s\n' "$strategy:" "$(grep '^accuracy:' "$out/digits-$strategy.log")"
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
    job "$out/seed-$strategy.log" run --strategy "$strategy" \
        --model examples/seed_net/seed_net.onnx --input examples/seed_net/images.npy \
        --output "$out/seed-$strategy.npy"
    # The summary is a log line: a quieter RUST_LOG leaves it out, which is
    # no failure.
    grep '^run: [0-9]* rows' "$out/seed-$strategy.log" || true
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
echo "== a small ResNet (torchvision BasicBlocks, residual Adds), exported by torch.onnx.export, 2 ranks"
resnet=tests/fixtures/torch/resnet_basic.dynamo.onnx
"$py" -c "import numpy as np; np.save('$out/resnet-in.npy', np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32))"
for strategy in data tensor pipeline; do
    job "$out/resnet-$strategy.log" run --strategy "$strategy" \
        --model "$resnet" --input "$out/resnet-in.npy" --output "$out/resnet-$strategy.npy"
done
"$py" - "$out" "$resnet" <<'PY'
import sys, numpy as np, onnxruntime as ort
out, model = sys.argv[1:]
s = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
want = s.run(None, {s.get_inputs()[0].name: np.load(f"{out}/resnet-in.npy")})[0]
for strategy in ["data", "tensor", "pipeline"]:
    got = np.load(f"{out}/resnet-{strategy}.npy")
    err = np.abs(got - want).max() / np.abs(want).max()
    print(f"{strategy:<9} output {got.shape}, largest difference from ONNX Runtime {err:.1e} (relative)")
    if err > 1e-4:
        sys.exit(f"error: {strategy} differs from ONNX Runtime by {err:.1e}")
PY

echo
echo "== our allreduce against MPI's own, 2 ranks"
mpirun -n 2 target/release/mpinfer bench collectives \
    --op allreduce --algo auto,mpi -b 1K -e 4M -f 16 --check
