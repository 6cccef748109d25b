#!/usr/bin/env bash
# Makespan of one `mpinfer batch` of six mixed tasks against the same six
# tasks run one after another, each with its own `mpirun mpinfer run` (what
# a user would script without batch), on the same ranks. Rounds alternate
# between the two, so drifts in the machine's speed fall on both alike.
# Prints a table and writes docs/bench/batch-makespan.csv.
#
#   scripts/bench-batch.sh           RANKS=2 ROUNDS=3 by default
set -euo pipefail

# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
[ -x .venv/bin/python ] || bash scripts/setup.sh
cargo build --release --quiet --bins
ranks=${RANKS:-2}
rounds=${ROUNDS:-3}
dir=target/bench-batch
rm -rf "$dir"
mkdir -p "$dir" docs/bench
mpinfer=$PWD/target/release/mpinfer
fixtures=$PWD/tests/fixtures/torch

# Inputs: the bundled examples repeated, and random images for two of the
# graph runtime's fixtures.
.venv/bin/python - "$dir" <<'PY'
import sys, numpy as np
out = sys.argv[1]
rng = np.random.default_rng(0)
np.save(f"{out}/seed.npy", np.tile(np.load("examples/seed_net/images.npy"), (16, 1, 1, 1)))
np.save(f"{out}/digits.npy", np.concatenate([np.load("examples/digits/images.npy")] * 8))
np.save(f"{out}/images.npy", rng.standard_normal((256, 3, 32, 32)).astype(np.float32))
PY

# name, model, input, weight, extra options
tasks=(
    "seed|$PWD/examples/seed_net/seed_net.onnx|seed.npy|3|"
    "digits|$PWD/examples/digits/model.onnx|digits.npy|1|"
    "resnet|$fixtures/resnet_basic.dynamo.onnx|images.npy|2|"
    "vit|$fixtures/vit.dynamo.onnx|images.npy|2|"
    "seed-tensor|$PWD/examples/seed_net/seed_net.onnx|seed.npy|1|--strategy tensor"
    "densenet|$fixtures/densenet.legacy.onnx|images.npy|1|"
)
{
    for t in "${tasks[@]}"; do
        IFS='|' read -r name model input weight extra <<<"$t"
        printf '[[task]]\nmodel = "%s"\ninput = "%s"\noutput = "out/%s.batch.npy"\nweight = %s\n' \
            "$model" "$input" "$name" "$weight"
        [ -n "$extra" ] && printf 'strategy = "%s"\n' "${extra#--strategy }"
        echo
    done
} >"$dir/tasks.toml"
mkdir -p "$dir/out"

now() { date +%s.%N; }
batch() {
    rm -f "$dir"/out/*.batch.npy*
    mpirun --oversubscribe -n "$ranks" "$mpinfer" batch --tasks "$dir/tasks.toml" >"$dir/batch.log" 2>&1
}
one_by_one() {
    local t name model input weight extra
    for t in "${tasks[@]}"; do
        IFS='|' read -r name model input weight extra <<<"$t"
        # shellcheck disable=SC2086  # extra is a list of options
        mpirun --oversubscribe -n "$ranks" "$mpinfer" run --model "$model" --input "$dir/$input" \
            --output "$dir/out/$name.run.npy" $extra >"$dir/$name.run.log" 2>&1
    done
}

"$mpinfer" batch --tasks "$dir/tasks.toml" --plan --ranks "$ranks" | sed 's/^/  /'
echo "round,batch_s,one_by_one_s" >docs/bench/batch-makespan.csv
for r in $(seq "$rounds"); do
    t0=$(now)
    batch
    t1=$(now)
    one_by_one
    t2=$(now)
    b=$(awk "BEGIN { print $t1 - $t0 }") s=$(awk "BEGIN { print $t2 - $t1 }")
    echo "$r,$b,$s" >>docs/bench/batch-makespan.csv
    printf 'round %s: batch %.2f s, one run after another %.2f s\n' "$r" "$b" "$s"
done
# The two ways must agree on every output (data strategy: to the byte).
for t in "${tasks[@]}"; do
    IFS='|' read -r name _ <<<"$t"
    cmp -s "$dir/out/$name.batch.npy" "$dir/out/$name.run.npy" ||
        echo "note: $name: batch and run outputs differ (expected only for tensor parallelism)"
done
.venv/bin/python - docs/bench/batch-makespan.csv "$ranks" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
b = [float(r["batch_s"]) for r in rows]
s = [float(r["one_by_one_s"]) for r in rows]
print(f"{sys.argv[2]} ranks, {len(rows)} rounds: batch median {statistics.median(b):.2f} s "
      f"(best {min(b):.2f}), one after another median {statistics.median(s):.2f} s (best {min(s):.2f}); "
      f"speedup {statistics.median(s) / statistics.median(b):.2f}x")
PY
