#!/usr/bin/env bash
# What 16-bit communication (`--comm-dtype bf16|f16`) costs in accuracy: both
# bundled examples under tensor parallelism on 2 ranks, once per
# communication type, each 16-bit run's outputs against the f32 run's. The
# README's figures are what this prints. Takes a few seconds.
set -euo pipefail

# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

if [ ! -x target/release/mpinfer ] || [ ! -x .venv/bin/python ]; then
    bash scripts/setup.sh
fi
out=target/comm-dtype
mkdir -p "$out"

run() { # NAME MODEL INPUT DTYPE [ARGS...]: output and log in $out
    local name=$1 model=$2 input=$3 dtype=$4
    shift 4
    local log="$out/$name-$dtype.log"
    if ! mpirun -n 2 target/release/mpinfer run --strategy tensor --comm-dtype "$dtype" \
        --model "$model" --input "$input" --output "$out/$name-$dtype.npy" "$@" >"$log" 2>&1; then
        cat "$log" >&2
        exit 1
    fi
}

for dtype in f32 bf16 f16; do
    run digits examples/digits/model.onnx examples/digits/images.npy "$dtype" \
        --labels examples/digits/labels.npy
    run seed_net examples/seed_net/seed_net.onnx examples/seed_net/images.npy "$dtype"
done

.venv/bin/python - "$out" <<'PY'
import sys
import numpy as np

out = sys.argv[1]
print("tensor parallelism, 2 ranks; difference = max |y - y_f32| / max |y_f32|")
print(f"{'model':<9} {'comm':<5} {'difference':>10}  {'classes':<13} accuracy")
for name in ["digits", "seed_net"]:
    ref = np.load(f"{out}/{name}-f32.npy")
    for dtype in ["f32", "bf16", "f16"]:
        y = np.load(f"{out}/{name}-{dtype}.npy")
        diff = np.abs(y - ref).max() / np.abs(ref).max()
        same = int((y.argmax(1) == ref.argmax(1)).sum())
        log = open(f"{out}/{name}-{dtype}.log").read().splitlines()
        acc = next((l.removeprefix("accuracy: ") for l in log if l.startswith("accuracy: ")), "-")
        print(f"{name:<9} {dtype:<5} {diff:>10.1e}  {f'{same}/{len(y)} same':<13} {acc}")
PY
