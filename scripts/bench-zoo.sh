#!/usr/bin/env bash
# Whole-process timings of torchvision models exported by torch.onnx.export
# (default exporter): mpinfer on 1 and 2 ranks against ONNX Runtime on 1 and
# 2 threads, rounds interleaved; and peak memory per rank under tensor
# parallelism on 1 and 2 ranks. Writes docs/bench/zoo-speed.csv and
# docs/bench/zoo-memory.csv.
#
#   ZOO_PYTHON=... scripts/bench-zoo.sh     ROUNDS=5 by default
# ZOO_PYTHON: a Python with torch and torchvision, used once to export.
set -euo pipefail

# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
[ -x .venv/bin/python ] || bash scripts/setup.sh
cargo build --release --quiet --bins
torch_py=${ZOO_PYTHON:-.venv-torch/bin/python}
py=.venv/bin/python
dir=target/bench-zoo
mkdir -p "$dir" docs/bench
rounds=${ROUNDS:-5}
export OMPI_MCA_pml=${OMPI_MCA_pml:-ob1}

for spec in resnet18:64:32 mobilenet_v2:64:32 resnet50:64:8 vit_b_16:224:4; do
    IFS=: read -r name size rows <<<"$spec"
    [ -f "$dir/$name.onnx" ] && continue
    "$torch_py" - "$dir" "$name" "$size" "$rows" <<'PY'
import sys, numpy as np, torch, torchvision
out, name, size, rows = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(0)
m = getattr(torchvision.models, name)(weights=None).eval()
batch = torch.export.Dim("batch", min=1, max=4096)
torch.onnx.export(m, (torch.randn(2, 3, size, size),), f"{out}/{name}.onnx",
                  dynamic_shapes=({0: batch},), dynamo=True, external_data=True)
np.save(f"{out}/{name}-input.npy",
        np.random.default_rng(0).standard_normal((rows, 3, size, size)).astype(np.float32))
PY
done

# shellcheck source=scripts/bench/seconds.sh
source scripts/bench/seconds.sh

csv=docs/bench/zoo-speed.csv
echo "round,model,side,seconds" >"$csv"
for round in $(seq 1 "$rounds"); do
    for name in resnet18 mobilenet_v2; do
        m=$dir/$name.onnx x=$dir/$name-input.npy
        for side in mpinfer-1rank-1thread mpinfer-1rank-2threads mpinfer-2ranks onnxruntime-1thread onnxruntime-2threads; do
            case $side in
            mpinfer-1rank-1thread) cmd=(mpirun -n 1 target/release/mpinfer run --threads 1
                --model "$m" --input "$x" --output "$dir/y.npy") ;;
            mpinfer-1rank-2threads) cmd=(mpirun -n 1 target/release/mpinfer run --threads 2
                --model "$m" --input "$x" --output "$dir/y.npy") ;;
            mpinfer-2ranks) cmd=(mpirun -n 2 target/release/mpinfer run --strategy data --threads 1
                --model "$m" --input "$x" --output "$dir/y.npy") ;;
            onnxruntime-1thread) cmd=("$py" scripts/bench/run_models.py ort "$m" "$x" "$dir/yo.npy" 1) ;;
            onnxruntime-2threads) cmd=("$py" scripts/bench/run_models.py ort "$m" "$x" "$dir/yo.npy" 2) ;;
            esac
            echo "$round,$name,$side,$(seconds "${cmd[@]}")" >>"$csv"
        done
    done
done
echo "bench: $csv" >&2

csv=docs/bench/zoo-memory.csv
echo "model,ranks,rank,weight_bytes,peak_rss_bytes" >"$csv"
for name in resnet50 vit_b_16; do
    for ranks in 1 2; do
        mpirun -n "$ranks" target/release/mpinfer run --strategy tensor --threads 1 \
            --model "$dir/$name.onnx" --input "$dir/$name-input.npy" --output "$dir/ym.npy" \
            --metrics "$dir/mem-$name-$ranks.json" >/dev/null 2>&1
        "$py" - "$dir/mem-$name-$ranks.json" "$name" "$ranks" >>"$csv" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
for r in m["per_rank"]:
    print(f'{sys.argv[2]},{sys.argv[3]},{r["rank"]},{r["weight_bytes"]},{r["peak_rss_bytes"]}')
PY
    done
done
echo "bench: $csv" >&2
