# shellcheck shell=bash
# Sourced by the whole-process benchmarks.

# seconds COMMAND...: runs it, output discarded, and prints its wall seconds.
seconds() {
    local t0=$EPOCHREALTIME
    "$@" >/dev/null 2>&1
    awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }'
}
