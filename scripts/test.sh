#!/usr/bin/env bash
# Sets up if needed (fast when already done), then runs every test and ends
# with one line totalling them:
#   1. the whole workspace against Open MPI (the default MPI),
#   2. the multi-rank tests again against MPICH, built in target/mpich
#      (mpi-sys does not rebuild when MPICC changes), at 1 and 2 ranks:
#      MPICH with more ranks than cores spins for milliseconds per message,
#   3. the SLURM job scripts on a real local SLURM (scripts/slurm/test-local.sh).
set -euo pipefail

# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

bash scripts/setup.sh

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
step() { echo "== $*" | tee -a "$log"; }

step "workspace tests, Open MPI"
cargo test --workspace --release --no-fail-fast 2>&1 | tee -a "$log" || status=$?

step "multi-rank tests, MPICH"
MPICC=mpicc.mpich CARGO_TARGET_DIR=target/mpich MPIRUN=mpiexec.mpich MPINFER_TEST_MAX_RANKS=2 \
    cargo test --release --no-fail-fast --test mpi_collectives --test mpi_run -- _n1 _n2 fault_other \
    2>&1 | tee -a "$log" || status=$?

step "SLURM job scripts on a local SLURM"
bash scripts/slurm/test-local.sh 2>&1 | tee -a "$log" || status=$?

# cargo prints one "test result" line per test binary; the multi-rank tests,
# which own their main(), print "N passed, M failed" themselves; the SLURM
# test prints a PASS or FAIL line per job.
awk '
    /^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
    /^[0-9]+ passed, [0-9]+ failed$/ { p += $1; f += $3 }
    /^(PASS|FAIL) / { if ($1 == "PASS") p += 1; else f += 1 }
    END { printf "all: %d passed, %d failed\n", p, f }
' "$log"
exit "$status"
