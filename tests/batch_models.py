"""Models, inputs and ONNX Runtime's outputs for the batch tests (tests/mpi_batch.rs).

    .venv/bin/python tests/batch_models.py OUT_DIR SEED

Writes into OUT_DIR two small models and the seed network, their inputs
and ONNX Runtime's outputs, broken files for tasks that must fail (random
bytes as a model, a truncated input, a model with an op mpinfer lacks), and manifest.json:

    {"cases": {NAME: {"model", "input", "expected", "rtol"}},
     "broken": {"garbage_model", "truncated_input", "unsupported_model"}}

The unsupported model takes the mlp case's input.

Paths are relative to OUT_DIR.
"""
import json
import os
import sys

import numpy as np
import onnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run_models  # noqa: E402


def main(out, seed):
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(seed)
    cases = {}

    def case(name, model, x, rtol=1e-4):
        onnx.save(model, os.path.join(out, f"{name}.onnx"))
        np.save(os.path.join(out, f"{name}.in.npy"), x)
        y = run_models.run_ort(os.path.join(out, f"{name}.onnx"), x)[1][0]
        np.save(os.path.join(out, f"{name}.expected.npy"), y)
        cases[name] = {"model": f"{name}.onnx", "input": f"{name}.in.npy",
                       "expected": f"{name}.expected.npy", "rtol": rtol}

    mlp, shape = run_models.mlp_matmul(rng)
    case("mlp", mlp, rng.uniform(-1, 1, size=(13, *shape)).astype(np.float32))
    conv, shape = run_models.conv_odd(rng)
    case("conv", conv, rng.uniform(-1, 1, size=(11, *shape)).astype(np.float32))
    # Long enough to stop part-way through (the tests slow a rank down).
    seed_model = run_models.seed_net.build(run_models.seed_net.weights())
    case("seed", seed_model, rng.uniform(0, 1, size=(512, 1, 32, 32)).astype(np.float32))

    onnx.save(run_models.unsupported(rng), os.path.join(out, "unsupported.onnx"))
    with open(os.path.join(out, "garbage.onnx"), "wb") as f:
        f.write(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with open(os.path.join(out, "mlp.in.npy"), "rb") as f:
        whole = f.read()
    with open(os.path.join(out, "truncated.npy"), "wb") as f:
        f.write(whole[: len(whole) - 100])

    manifest = {"cases": cases,
                "broken": {"garbage_model": "garbage.onnx", "truncated_input": "truncated.npy",
                           "unsupported_model": "unsupported.onnx"}}
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], int(sys.argv[2]))
