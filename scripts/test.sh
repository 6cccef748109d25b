#!/usr/bin/env bash
# Sets up if needed (fast when already done), then runs every test and ends
# with one line totalling them.
set -euo pipefail

# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

bash scripts/setup.sh

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --release --no-fail-fast 2>&1 | tee "$log" || status=$?

# cargo prints one "test result" line per test binary; the multi-rank tests,
# which own their main(), print "N passed, M failed" themselves.
awk '
    /^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
    /^[0-9]+ passed, [0-9]+ failed$/ { p += $1; f += $3 }
    END { printf "all: %d passed, %d failed\n", p, f }
' "$log"
exit "$status"
