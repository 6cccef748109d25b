#!/usr/bin/env bash
# Measures our collectives against MPI's built-in ones at 2 and 4 ranks and
# writes the raw CSV, a summary and a bandwidth chart per rank count under
# docs/bench/. Figures swing 20-40% between runs on small shared machines:
# every run interleaves our calls with MPI's, so compare the ratio column,
# and run twice to see the spread.
#
#   scripts/bench.sh            # auto vs MPI, 1 KiB..64 MiB, 2 and 4 ranks
#   RANKS="2" RUNS=1 scripts/bench.sh
set -euo pipefail

# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

[ -x target/release/mpinfer ] || bash scripts/setup.sh
cargo build --release --quiet --bins

out=docs/bench
mkdir -p "$out"
summary="$out/collectives-summary.md"
{
    echo "<!-- written by scripts/bench.sh on $(hostname), $(date -u +%Y-%m-%d) -->"
    echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), $(nproc) cores;" \
        "MPI: $(mpirun --version 2>&1 | head -1)"
} >"$summary"

for ranks in ${RANKS:-2 4}; do
    for run in $(seq 1 "${RUNS:-2}"); do
        csv="$out/collectives-${ranks}ranks-run${run}.csv"
        # One chart per rank count: the first run's medians.
        plot=()
        if [ "$run" = 1 ]; then
            plot=(--plot "$out/collectives-${ranks}ranks.svg")
        fi
        echo "bench: $ranks ranks, run $run -> $csv" >&2
        mpirun -n "$ranks" target/release/mpinfer bench collectives \
            --op all --algo auto -b 1K -e 64M -f 4 --check --format csv "${plot[@]}" >"$csv"
        {
            echo
            echo "### $ranks ranks, run $run"
            echo
            echo "| op | bytes | auto picks | ours µs | MPI µs | busbw ours/MPI | wrong |"
            echo "|---|---:|---|---:|---:|---:|---:|"
            awk -F, 'NR > 1 { sub(/^auto\(/, "", $2); sub(/\)$/, "", $2);
                printf "| %s | %s | %s | %.2f | %.2f | %.2f | %s |\n", $1, $5, $2, $7, $10, $12, $13 }' "$csv"
        } >>"$summary"
    done
done
# Latency: small messages, where the target is time, not bandwidth.
for ranks in ${RANKS:-2 4}; do
    csv="$out/collectives-small-${ranks}ranks.csv"
    echo "bench: $ranks ranks, 8 B..1 KiB -> $csv" >&2
    mpirun -n "$ranks" target/release/mpinfer bench collectives \
        --op all --algo auto -b 8 -e 1K -f 4 --check --format csv >"$csv"
    {
        echo
        echo "### $ranks ranks, small messages"
        echo
        echo "| op | bytes | auto picks | ours µs | MPI µs | time ours/MPI | wrong |"
        echo "|---|---:|---|---:|---:|---:|---:|"
        awk -F, 'NR > 1 { sub(/^auto\(/, "", $2); sub(/\)$/, "", $2);
            printf "| %s | %s | %s | %.2f | %.2f | %.2f | %s |\n", $1, $5, $2, $7, $10, $7 / $10, $13 }' "$csv"
    } >>"$summary"
done
echo "bench: summary in $summary" >&2
