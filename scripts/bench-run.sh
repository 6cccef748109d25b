#!/usr/bin/env bash
# Whole-process timings of `mpinfer run` (start, load, run, save) against
# ONNX Runtime, rounds interleaved so that drift of the machine hits all
# sides alike; per-rank memory of tensor parallelism; pipeline throughput
# against its micro-batch count. Writes docs/bench/run-*.csv.
#
#   scripts/bench-run.sh          ROUNDS=5 by default
set -euo pipefail

# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

[ -x .venv/bin/python ] || bash scripts/setup.sh
cargo build --release --quiet --bins
py=.venv/bin/python
dir=target/bench-run
mkdir -p "$dir" docs/bench
[ -f "$dir/seed-8192.npy" ] || "$py" scripts/bench/run_models.py seed-input "$dir" 8192
[ -f "$dir/mlp.onnx" ] || "$py" scripts/bench/run_models.py mlp "$dir"
seed=examples/seed_net/seed_net.onnx
rounds=${ROUNDS:-5}
# Open MPI first tries its UCX messaging layer, which fails on a machine
# without InfiniBand and falls back to ob1 (shared memory) after 0.2 s of
# every start-up (measured: MPI_Init of a C program 0.32 s, 0.12 s with
# this). Going straight to ob1 is what such a machine should be told.
export OMPI_MCA_pml=${OMPI_MCA_pml:-ob1}

# shellcheck source=scripts/bench/seconds.sh
source scripts/bench/seconds.sh

# --- data parallel, seed network, 8192 rows ---------------------------------
csv=docs/bench/run-data.csv
echo "round,side,seconds,rows_per_s" >"$csv"
for round in $(seq 1 "$rounds"); do
    for side in mpinfer-1rank mpinfer-2ranks onnxruntime-2threads; do
        case $side in
        mpinfer-1rank) cmd=(mpirun -n 1 target/release/mpinfer run --strategy data --threads 1
            --model "$seed" --input "$dir/seed-8192.npy" --output "$dir/y1.npy") ;;
        mpinfer-2ranks) cmd=(mpirun -n 2 target/release/mpinfer run --strategy data --threads 1
            --model "$seed" --input "$dir/seed-8192.npy" --output "$dir/y2.npy") ;;
        onnxruntime-2threads) cmd=("$py" scripts/bench/run_models.py ort "$seed"
            "$dir/seed-8192.npy" "$dir/yo.npy" 2) ;;
        esac
        s=$(seconds "${cmd[@]}")
        echo "$round,$side,$s,$(awk -v s="$s" 'BEGIN { printf "%.0f", 8192 / s }')" >>"$csv"
    done
done
echo "bench: $csv" >&2

# --- tensor parallel, 784-4096-4096-10 MLP: memory per rank ------------------
csv=docs/bench/run-tensor.csv
echo "ranks,rank,weight_bytes,peak_rss_bytes,rows_per_s" >"$csv"
for ranks in 1 2; do
    mpirun -n "$ranks" target/release/mpinfer run --strategy tensor --threads 1 \
        --model "$dir/mlp.onnx" --input "$dir/mlp-input.npy" --output "$dir/ym.npy" \
        --metrics "$dir/tensor-$ranks.json" >/dev/null 2>&1
    "$py" - "$dir/tensor-$ranks.json" "$ranks" >>"$csv" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
for r in m["per_rank"]:
    print(f'{sys.argv[2]},{r["rank"]},{r["weight_bytes"]},{r["peak_rss_bytes"]},{m["rows_per_s"]:.0f}')
PY
done
echo "bench: $csv" >&2

# --- pipeline: 8 equal 1024-wide layers over 2 stages, 2048 rows --------------
csv=docs/bench/run-pipeline.csv
echo "micro_batch,micro_batches,rows_per_s,busy_rank0,busy_rank1,ideal_bubble" >"$csv"
[ -f "$dir/deep.onnx" ] || "$py" scripts/bench/run_models.py deep "$dir"
for micro in 1024 512 256 128 64 32 16; do
    mpirun -n 2 target/release/mpinfer run --strategy pipeline --threads 1 --batch-size "$micro" \
        --model "$dir/deep.onnx" --input "$dir/deep-input.npy" --output "$dir/yp.npy" \
        --metrics "$dir/pipe.json" >/dev/null 2>&1
    "$py" - "$dir/pipe.json" "$micro" >>"$csv" <<'PY'
import json, sys
m = json.load(open(sys.argv[1])); micro = int(sys.argv[2]); mb = -(-m["rows"] // micro)
busy = [r["compute_s"] / m["wall_s"] for r in m["per_rank"]]
print(f'{micro},{mb},{m["rows_per_s"]:.0f},{busy[0]:.3f},{busy[1]:.3f},{1 / (mb + 1):.3f}')
PY
done
echo "bench: $csv" >&2

# --- data parallel with one rank slowed 2x: static against dynamic -----------
# Ideal: all rows spread so that every rank finishes together at the speed it
# showed in this very run (rows / compute seconds; the slowed rank also
# shares the machine, so it runs more than 2x slower). Actual: the longest
# time a rank spent computing and communicating.
csv=docs/bench/run-schedule.csv
echo "round,schedule,rows_rank0,rows_rank1,actual_s,ideal_s,over_ideal" >"$csv"
"$py" -c "import numpy as np; np.save('$dir/seed-4096.npy', np.load('$dir/seed-8192.npy')[:4096])"
for round in $(seq 1 "$rounds"); do
    for schedule in static dynamic; do
        MPINFER_SLOW_RANK=1:2 mpirun -n 2 target/release/mpinfer run --strategy data --threads 1 \
            --batch-size 64 --schedule "$schedule" --model "$seed" --input "$dir/seed-4096.npy" \
            --output "$dir/ys.npy" --metrics "$dir/sched.json" >/dev/null 2>&1
        "$py" - "$dir/sched.json" "$round" "$schedule" >>"$csv" <<'PY'
import json, sys
ranks = json.load(open(sys.argv[1]))["per_rank"]
speed = sum(r["rows"] / r["compute_s"] for r in ranks)
ideal = sum(r["rows"] for r in ranks) / speed
actual = max(r["compute_s"] + r["comm_s"] for r in ranks)
rows = ",".join(str(int(r["rows"])) for r in ranks)
print(f"{sys.argv[2]},{sys.argv[3]},{rows},{actual:.3f},{ideal:.3f},{actual / ideal:.2f}")
PY
    done
done
echo "bench: $csv" >&2
