#!/usr/bin/env bash
# Sets up if needed, then runs a multi-rank collective benchmark with result checks.
set -euo pipefail

# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

if [ ! -x target/release/mpinfer ]; then
    bash scripts/setup.sh
fi

exec mpirun -n 2 target/release/mpinfer bench collectives \
    --op all --algo auto,mpi -b 1K -e 4M -f 4 --check
