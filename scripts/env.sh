# shellcheck shell=bash
# Sourced by the other scripts: Open MPI settings for running as root and with
# more ranks than cores, cargo on PATH, and the repository root as the working
# directory. Changes only the environment of the shell that sources it.

# Open MPI refuses to run as root unless both of these are set.
export OMPI_ALLOW_RUN_AS_ROOT=1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Allow more ranks than cores without passing --oversubscribe.
export OMPI_MCA_rmaps_base_oversubscribe=1

# rustup installs the toolchain in ~/.cargo/bin; use it when it is there.
_mpinfer_cargo_bin="${CARGO_HOME:-${HOME:-/root}/.cargo}/bin"
if [ -d "$_mpinfer_cargo_bin" ]; then
    case ":${PATH:-}:" in
        *":$_mpinfer_cargo_bin:"*) ;;
        *) export PATH="$_mpinfer_cargo_bin${PATH:+:$PATH}" ;;
    esac
fi
unset _mpinfer_cargo_bin

# The repository root is the parent of this file's folder.
cd "$(dirname "${BASH_SOURCE[0]}")/.." || return 1
