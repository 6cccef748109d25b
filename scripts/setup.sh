#!/usr/bin/env bash
# Installs what mpinfer needs on a Debian 12 machine (run as root) and builds
# the release binary. Idempotent: a second run does no apt or pip work.
set -euo pipefail

# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

say() { echo "setup: $*"; }

# --- system packages -------------------------------------------------------
# MPICH beside Open MPI: the multi-rank tests run against both.
packages=(openmpi-bin libopenmpi-dev mpich libmpich-dev libclang-dev clang pkg-config python3-venv)
missing=()
for pkg in "${packages[@]}"; do
    if ! dpkg -s "$pkg" >/dev/null 2>&1; then
        missing+=("$pkg")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    sudo_cmd=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo_cmd=(sudo)
        else
            echo "error: missing packages (${missing[*]}) and not root; run as root" >&2
            exit 1
        fi
    fi
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo_cmd[@]}" apt-get update -qq
    "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
    say "system packages present"
fi

# --- Rust toolchain --------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found (install a Rust toolchain with rustup, then rerun scripts/setup.sh)" >&2
    exit 1
fi
say "using $(cargo --version)"

# --- Python venv (ONNX tooling for models and reference outputs) -----------
venv_py=.venv/bin/python
# scikit-learn trains the bundled digits example; NVIDIA's NVRTC wheel lets the
# tests compile our CUDA kernels on machines without a GPU or CUDA toolkit.
py_packages=(numpy onnx onnxruntime scikit-learn nvidia-cuda-nvrtc-cu12)
if [ -x "$venv_py" ] && "$venv_py" -c 'import numpy, onnx, onnxruntime, sklearn, nvidia.cuda_nvrtc' >/dev/null 2>&1; then
    say "python venv present (.venv)"
else
    if [ ! -x "$venv_py" ]; then
        # Prefer Debian's python3, which python3-venv provides venv support for.
        py=python3
        if [ -x /usr/bin/python3 ]; then py=/usr/bin/python3; fi
        say "creating python venv .venv"
        "$py" -m venv .venv
    fi
    say "installing ${py_packages[*]} into .venv"
    "$venv_py" -m pip install --quiet --disable-pip-version-check "${py_packages[@]}"
fi

# --- build -----------------------------------------------------------------
say "building release binary"
cargo build --release --workspace --bins
say "done: target/release/mpinfer"
