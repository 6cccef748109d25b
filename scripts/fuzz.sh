#!/usr/bin/env bash
# Fuzzes the file loaders and the signature decoder, one target at a time,
# then folds what was found into the committed corpus, minimised.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#   SECONDS_PER_TARGET  default 600
#   TARGET              default: every target in fuzz/Cargo.toml
#
# Works on stable Rust: RUSTC_BOOTSTRAP=1 lets it take the unstable flags
# (sanitizer, coverage instrumentation) that cargo-fuzz passes.
# Crashes, leaks and out-of-memory inputs land in fuzz/artifacts/TARGET/;
# minimise one with `cargo fuzz tmin -a TARGET FILE` (from fuzz/) and keep
# it under fuzz/regressions/TARGET/ so that `cargo test` replays it.
set -euo pipefail

# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

per_target=${1:-600}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(onnx_load npy_read signature_decode)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi
export RUSTC_BOOTSTRAP=1

# One length limit per target: model files need room for a few layers of
# weights, a signature is 48 bytes.
max_len() {
    case "$1" in
        onnx_load) echo 65536 ;;
        npy_read) echo 16384 ;;
        *) echo 256 ;;
    esac
}

cd fuzz
# -a: overflow checks and debug assertions, which the release build lacks.
cargo fuzz build -a

failed=()
for t in "${targets[@]}"; do
    len=$(max_len "$t")
    mkdir -p "work/$t" "corpus/$t" "regressions/$t"
    echo "== $t: ${per_target}s"
    # New inputs go to work/ (not committed); the committed corpus and the
    # regressions only seed the run. Fork mode with crashes ignored keeps
    # fuzzing past a known regression (which crashes until it is fixed) and
    # saves every distinct finding in fuzz/artifacts/$t/.
    marker=$(mktemp)
    cargo fuzz run -a "$t" "work/$t" "corpus/$t" "regressions/$t" -- \
        -fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1 \
        -max_total_time="$per_target" -rss_limit_mb=2048 -max_len="$len" \
        -timeout=10 || true
    # A saved regression that still fails is reported once more under its
    # own name; anything else is new.
    known=$(find "regressions/$t" -type f -exec sha1sum {} + | cut -d' ' -f1)
    new=()
    while IFS= read -r f; do
        [ -n "$f" ] || continue
        if grep -qx "$(sha1sum "$f" | cut -d' ' -f1)" <<<"$known"; then
            echo "   $t: a saved regression still fails: $f" >&2
        else
            new+=("$f")
        fi
    done < <(find "artifacts/$t" -type f -newer "$marker" 2>/dev/null | sort)
    rm -f "$marker"
    if [ ${#new[@]} -gt 0 ]; then
        echo "!! $t: new findings:" >&2
        printf '   %s\n' "${new[@]}" >&2
        failed+=("$t")
    fi
    # The committed corpus: the smallest set of inputs, old and new, that
    # keeps every feature reached.
    cp -n "work/$t"/* "corpus/$t"/ 2>/dev/null || true
    cargo fuzz cmin -a "$t" "corpus/$t" -- \
        -set_cover_merge=1 -rss_limit_mb=2048 -max_len="$len"
    echo "== $t corpus: $(find "corpus/$t" -type f | wc -l) files, $(du -sh "corpus/$t" | cut -f1)"
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "targets with findings: ${failed[*]}" >&2
    exit 1
fi
