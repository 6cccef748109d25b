#!/usr/bin/env bash
# CPU kernel throughput (benches/kernels.rs) on 1 and 2 threads: the seed
# network's convolutions (on the AVX-512 kernels where the CPU has them, and on
# the portable ones), its linear layers, large square GEMMs and its average
# pool, against this machine's peak. Writes docs/bench/kernels.md.
set -euo pipefail

# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

cargo bench --quiet --bench kernels --no-run
# target/criterion keeps every group ever run, from other machines and other
# runs too (conv2d-portable stays from a CPU with AVX-512): the table reads
# only the results this run writes, newer than this stamp.
stamp=$(mktemp)
trap 'rm -f "$stamp"' EXIT
load_before=$(cut -d' ' -f1 /proc/loadavg)
cargo bench --quiet --bench kernels
if grep -qw avx512f /proc/cpuinfo; then
    MPINFER_CPU_AVX512=0 cargo bench --quiet --bench kernels -- conv2d
fi

load_after=$(cut -d' ' -f1 /proc/loadavg)

mkdir -p docs/bench
python3 - "${CARGO_TARGET_DIR:-target}/criterion" docs/bench/kernels.md "$load_before" "$load_after" "$stamp" <<'PY'
import json, os, re, sys

root, out, load_before, load_after, stamp = sys.argv[1:6]
since = os.path.getmtime(stamp)
info = open("/proc/cpuinfo").read()
field = lambda name: re.search(rf"^{name}\s*:\s*(.*)$", info, re.M).group(1).strip()
model, mhz = field("model name"), float(field("cpu MHz"))
family, model_no = int(field("cpu family")), int(field("model"))
flags = field("flags").split()
cores = os.cpu_count()
# f32 FLOPs per cycle per core from FMA: lanes × 2 (multiply and add) × FMAs
# issued per cycle. Zen 4 (AMD family 25 with AVX-512) runs a 512-bit FMA as
# two halves on its two 256-bit FMA pipes: one 16-lane FMA per cycle. Other
# AVX-512 cores are taken to have two 512-bit FMA units, AVX2 cores two
# 256-bit ones. PEAK_FLOPS_PER_CYCLE overrides the guess.
amd = field("vendor_id") == "AuthenticAMD"
if "avx512f" in flags and not (amd and family == 25):
    per_cycle, how = 64, "2 FMA units × 16 lanes × 2 flops"
elif "avx512f" in flags:
    per_cycle, how = 32, "1 16-lane FMA per cycle (two 256-bit pipes) × 2 flops"
else:
    per_cycle, how = 32, "2 FMA units × 8 lanes × 2 flops"
per_cycle = int(os.environ.get("PEAK_FLOPS_PER_CYCLE", per_cycle))
core_peak = per_cycle * mhz / 1e3  # GFLOP/s at the nominal clock

def results(group):
    rows = []
    gdir = os.path.join(root, group)
    if not os.path.isdir(gdir):
        return rows
    for name in sorted(os.listdir(gdir)):
        for threads in ("1t", "2t"):
            d = os.path.join(gdir, name, threads, "new")
            path = os.path.join(d, "estimates.json")
            if not os.path.exists(path) or os.path.getmtime(path) < since:
                continue
            est = json.load(open(os.path.join(d, "estimates.json")))
            bench = json.load(open(os.path.join(d, "benchmark.json")))
            ns = est["median"]["point_estimate"]
            work = bench["throughput"]["Elements"]
            rows.append((name, int(threads[0]), ns / 1e6, work / ns))
    return rows

shapes = {
    "seed_conv1": "1→32, 3×3, 32×32 input, batch 256",
    "seed_conv2": "32→64, 3×3, 30×30 input, batch 256 (Winograd)",
    "seed_fc1": "256 × 3136 · 3136 × 100",
    "seed_fc2": "256 × 100 · 100 × 10",
    "square_1024": "1024³",
    "square_2048": "2048³",
    "seed_avgpool4": "64 × 28×28 → 7×7, batch 256",
}

lines = [
    "# CPU kernel throughput",
    "",
    "Written by `scripts/bench-kernels.sh` (criterion medians of 10 samples,",
    "`benches/kernels.rs`). GFLOP/s counts the direct algorithm's operations",
    "(2·M·N·K; 2 · outputs · C·kH·kW for a convolution, so Winograd, which",
    "does fewer multiplications, can read above what the FMA units deliver).",
    "The machine is shared: single runs swing by 20–40%, and with another",
    "busy process 2 threads run no faster than 1. One-minute load average",
    f"before and after the run: {load_before} and {load_after}.",
    "",
    f"Machine: {model}, {cores} cores, {mhz:.0f} MHz nominal (from /proc/cpuinfo).",
    f"Peak: {how} = {per_cycle} f32 FLOPs per cycle per core;",
    f"× {mhz / 1e3:.2f} GHz nominal = {core_peak:.0f} GFLOP/s per core,",
    f"{core_peak * 2:.0f} GFLOP/s on 2 threads. The cores boost above the",
    "nominal clock, so measured figures can exceed this peak.",
    "",
    "| kernel | shape | threads | ms | GFLOP/s | % of nominal peak |",
    "|---|---|---:|---:|---:|---:|",
]
for group, label in (("conv2d", "conv2d"), ("conv2d-portable", "conv2d, portable"), ("gemm", "gemm")):
    for name, threads, ms, per_ns in results(group):
        peak = core_peak * threads
        lines.append(
            f"| {label} {name} | {shapes.get(name, '')} | {threads} | {ms:.2f} | "
            f"{per_ns:.1f} | {100 * per_ns / peak:.0f}% |"
        )
lines += ["", "| kernel | shape | threads | ms | input GB/s |", "|---|---|---:|---:|---:|"]
for name, threads, ms, per_ns in results("pool"):
    lines.append(f"| pool {name} | {shapes.get(name, '')} | {threads} | {ms:.2f} | {4 * per_ns:.1f} |")
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
