#!/usr/bin/env bash
# The full-size torchvision zoo on mpinfer against ONNX Runtime (not part of
# scripts/test.sh: it exports 14 models twice and takes the better part of an
# hour on two cores). Needs a Python with torch, torchvision, onnx and
# onnxruntime: set ZOO_PYTHON, or make .venv-torch with
#   python3 -m venv .venv-torch && .venv-torch/bin/pip install torch torchvision onnx onnxscript onnxruntime
set -euo pipefail
# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
python=${ZOO_PYTHON:-.venv-torch/bin/python}
if ! "$python" -c 'import torch, torchvision, onnxruntime' >/dev/null 2>&1; then
    echo "error: $python lacks torch, torchvision or onnxruntime (set ZOO_PYTHON; see the top of $0)" >&2
    exit 1
fi
cargo build --release --quiet
exec "$python" scripts/zoo.py "$@"
