#!/usr/bin/env bash
# Sets up if needed (fast when already done), then runs every test.
set -euo pipefail

# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

bash scripts/setup.sh

exec cargo test --workspace --release --no-fail-fast
