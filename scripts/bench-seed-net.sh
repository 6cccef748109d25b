#!/usr/bin/env bash
# The seed network at batch 256 on one process: mpinfer's CPU kernels against
# ONNX Runtime with the same thread count, alternated round by round so that
# drift of the machine hits both. Writes docs/bench/seed-net.csv.
set -euo pipefail

# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

[ -x .venv/bin/python ] || bash scripts/setup.sh
cargo build --release --quiet --example seed_net
dir=target/seed_net
mkdir -p "$dir" docs/bench
.venv/bin/python examples/seed_net/model.py make "$dir" --batch 256

csv=docs/bench/seed-net.csv
echo "threads,round,mpinfer_img_s,onnxruntime_img_s" >"$csv"
for threads in 1 2; do
    for round in 1 2 3 4 5; do
        ours=$(target/release/examples/seed_net "$dir" "$threads" 5 2>/dev/null)
        ort=$(.venv/bin/python examples/seed_net/model.py time "$dir" "$threads" 5)
        echo "$threads,$round,$ours,$ort" >>"$csv"
    done
done
.venv/bin/python - "$csv" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
for t in sorted({r["threads"] for r in rows}):
    ours = statistics.median(float(r["mpinfer_img_s"]) for r in rows if r["threads"] == t)
    ort = statistics.median(float(r["onnxruntime_img_s"]) for r in rows if r["threads"] == t)
    print(f"{t} threads: mpinfer {ours:.0f} img/s, ONNX Runtime {ort:.0f} img/s, ratio {ours / ort:.2f}")
PY
