#!/usr/bin/env bash
# Sets up if needed (fast when already done), then runs every test and ends
# with one line totalling them:
#   1. the whole workspace against Open MPI (the default MPI),
#   2. the multi-rank tests again against MPICH, built in target/mpich
#      (mpi-sys does not rebuild when MPICC changes), at 1 and 2 ranks:
#      MPICH with more ranks than cores spins for milliseconds per message,
#   3. the CUDA device tests (kernels/tests/cuda_ops.rs) on the CPU emulation
#      of the driver and kernels (scripts/cuda-emu.sh), so that they run on
#      machines without a GPU too,
#   4. the SLURM job scripts on a real local SLURM (scripts/slurm/test-local.sh).
# Before them, formatting and clippy with warnings as errors. The last line
# (scripts/tally.py) counts a suite that did not build or did not finish as
# failed, and a test that could not run here as skipped, naming each.
set -euo pipefail

# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

bash scripts/setup.sh

log=$(mktemp)
# Tests that cannot run here record why in this file (mpinfer-testkit's skip).
MPINFER_SKIP_LOG=$(mktemp)
export MPINFER_SKIP_LOG
trap 'rm -f "$log" "$MPINFER_SKIP_LOG"' EXIT
status=0
# step NAME COMMAND...: runs it, its output teed into the log between markers
# that let the tally tell a step that died from one that passed.
step() {
    local name=$1 rc=0
    shift
    echo "== step $name" | tee -a "$log"
    "$@" 2>&1 | tee -a "$log" || rc=$?
    echo "== step-exit $name $rc" >>"$log"
    [ "$rc" = 0 ] || status=$rc
}

step "format" cargo fmt --all --check
step "clippy" cargo clippy --workspace --release --all-targets -- -D warnings

step "workspace tests, Open MPI" cargo test --workspace --release --no-fail-fast

step "multi-rank tests, MPICH" env MPICC=mpicc.mpich CARGO_TARGET_DIR=target/mpich MPIRUN=mpiexec.mpich \
    MPINFER_TEST_MAX_RANKS=2 cargo test --release --no-fail-fast --test mpi_collectives --test mpi_run \
    -- _n1 _n2 fault_other

step "CUDA device tests on the CPU emulation" bash scripts/cuda-emu.sh test

step "SLURM job scripts on a local SLURM" bash scripts/slurm/test-local.sh

python3 scripts/tally.py "$log" "$MPINFER_SKIP_LOG"
exit "$status"
