#!/usr/bin/env bash
# One command that proves the CUDA path on a real GPU: the device tests with
# skips turned into failures, whole models on the GPU against the CPU, and two
# ranks sharing the one GPU. Everything goes to one folder ($OUT, else
# target/gpu-check), each result headed with the device's name.
#
#   scripts/gpu-check.sh            # on the GPU machine, from the repository root
#
# It runs prebuilt binaries (target/release/mpinfer, the cuda_ops test
# executable under target/release/deps and target/release/examples/cuda_bench),
# so the GPU machine needs no Rust; the vendor side of the benchmark needs the
# machine's PyTorch (scripts/gpu-bench-torch.py).
# Without MPI there, it unpacks Open MPI from .deb files in $MPI_DEBS (made
# with `apt-get download` on a Debian 12 machine). Without a GPU it says what
# it would do and exits with status 2.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${OUT:-target/gpu-check}
mkdir -p "$out"
mpinfer=target/release/mpinfer
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

steps=(
    "cuda_ops device tests with MPINFER_REQUIRE_CUDA=1 (under compute-sanitizer memcheck when present)"
    "mpinfer run --device cuda on the seed network and a residual network, against --device cpu"
    "mpirun -n 2 with both ranks on the one GPU, data and tensor parallel, against --device cpu"
    "our GEMM and convolution against cuBLAS and cuDNN (through the machine's PyTorch, TF32 off): 1024^3, 4096^3 and the seed network's shapes at batch 1024, f32 and bf16"
)

gpu_name() {
    command -v nvidia-smi >/dev/null 2>&1 &&
        nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -n 1
}

name=$(gpu_name)
if [ -z "$name" ]; then
    echo "gpu-check: no GPU here (nvidia-smi finds none); on a GPU machine it would run:"
    printf '  %s\n' "${steps[@]}"
    echo "gpu-check: nothing was run"
    exit 2
fi
echo "device: $name" | tee "$out/device.txt"

if ! command -v mpirun >/dev/null 2>&1; then
    [ -n "${MPI_DEBS:-}" ] || { echo "gpu-check: no mpirun and no MPI_DEBS to unpack" >&2; exit 1; }
    root=$out/mpi
    for deb in "$MPI_DEBS"/*.deb; do dpkg -x "$deb" "$root"; done
    export PATH=$root/usr/bin:$PATH
    export LD_LIBRARY_PATH=$root/usr/lib/x86_64-linux-gnu:$root/usr/lib/x86_64-linux-gnu/openmpi/lib:${LD_LIBRARY_PATH:-}
    export OPAL_PREFIX=$root/usr
fi
"$mpinfer" env --device cuda >"$out/env.txt" 2>&1
failed=0
check() {
    local what=$1
    shift
    if "$@" >"$out/$what.log" 2>&1; then
        echo "PASS $what ($name)" | tee -a "$out/summary.txt"
    else
        echo "FAIL $what ($name): see $out/$what.log" | tee -a "$out/summary.txt"
        failed=1
    fi
}

tests=$(ls -t target/release/deps/cuda_ops-* 2>/dev/null | grep -v '\.d$' | head -n 1)
sanitizer=()
command -v compute-sanitizer >/dev/null 2>&1 && sanitizer=(compute-sanitizer --tool memcheck)
check cuda-ops env MPINFER_REQUIRE_CUDA=1 "${sanitizer[@]}" "$tests" --test-threads 1

same() {
    python3 - "$1" "$2" <<'PY'
import sys, numpy as np
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
err = float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))
print(f"max |gpu - cpu| / max |cpu| = {err:.2e}")
sys.exit(0 if a.shape == b.shape and err <= 1e-4 else 1)
PY
}
run_both() {
    local m=$1 x=$2 ranks=$3 strategy=$4 tag=$5
    mpirun --oversubscribe -n "$ranks" "$mpinfer" run --model "$m" --input "$x" \
        --output "$out/$tag.cpu.npy" --strategy "$strategy" --device cpu &&
        mpirun --oversubscribe -n "$ranks" "$mpinfer" run --model "$m" --input "$x" \
            --output "$out/$tag.cuda.npy" --strategy "$strategy" --device cuda &&
        same "$out/$tag.cuda.npy" "$out/$tag.cpu.npy"
}
seed=examples/seed_net/seed_net.onnx seed_in=examples/seed_net/images.npy
res=tests/fixtures/torch/resnet_basic.dynamo.onnx
python3 -c "import numpy as np; np.save('$out/res.in.npy', np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32))"
check seed-cuda run_both "$seed" "$seed_in" 1 data seed
check resnet-cuda run_both "$res" "$out/res.in.npy" 1 data res
check seed-2ranks-data run_both "$seed" "$seed_in" 2 data seed2d
check seed-2ranks-tensor run_both "$seed" "$seed_in" 2 tensor seed2t
check resnet-2ranks-tensor run_both "$res" "$out/res.in.npy" 2 tensor res2t

# Kernels against the vendor libraries, on the same shapes, one table.
bench=target/release/examples/cuda_bench
check bench-mpinfer sh -c "'$bench' > '$out/bench.mpinfer.jsonl'"
if python3 -c "import torch" 2>/dev/null; then
    check bench-vendor sh -c "python3 scripts/gpu-bench-torch.py > '$out/bench.vendor.jsonl'"
    python3 - "$out/bench.mpinfer.jsonl" "$out/bench.vendor.jsonl" >"$out/kernels.md" <<'PY'
import json, sys
ours = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
theirs = {(r["op"], r["dtype"], r["shape"]): r for r in map(json.loads, filter(str.strip, open(sys.argv[2])))}
# The issue's targets: share of the vendor library's throughput.
targets = {("gemm", "f32", "4096x4096x4096"): 0.70, ("gemm", "bf16", "4096x4096x4096"): 0.50}
print(f"device: {ours[0]['device']}\n")
print("| op | dtype | shape | mpinfer ms | vendor ms | mpinfer TFLOP/s | vendor TFLOP/s | share | target |")
print("|---|---|---|---:|---:|---:|---:|---:|---:|")
for r in ours:
    key = (r["op"], r["dtype"], r["shape"])
    v = theirs.get(key)
    if v is None:
        continue
    share = v["ms"] / r["ms"]
    target = targets.get(key, 0.50 if r["op"] == "conv" else None)
    mark = "" if target is None else f"{target:.0%} {'met' if share >= target else 'MISSED'}"
    print(f"| {r['op']} | {r['dtype']} | {r['shape']} | {r['ms']:.3f} | {v['ms']:.3f} | "
          f"{r['tflops']:.2f} | {v['tflops']:.2f} | {share:.0%} | {mark} |")
PY
    sed 's/^/  /' "$out/kernels.md"
else
    echo "SKIP bench-vendor ($name): no PyTorch here to time cuBLAS and cuDNN with" | tee -a "$out/summary.txt"
fi
exit "$failed"
