#!/bin/sh
# Runs every fuzz target for a few seconds (a smoke test; long fuzzing is not CI's job).
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets the stable toolchain accept them.
set -eu
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET="${FUZZ_SECONDS:-10}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for target in $(cargo fuzz list --fuzz-dir fuzz); do
    echo "fuzz smoke: $target (${SECONDS_PER_TARGET}s)"
    # New inputs go to the ignored fuzz/corpus; committed seeds (fuzz/seeds/TARGET) are read only.
    mkdir -p "fuzz/corpus/$target"
    corpora="fuzz/corpus/$target"
    [ -d "fuzz/seeds/$target" ] && corpora="$corpora fuzz/seeds/$target"
    # shellcheck disable=SC2086
    if ! cargo fuzz run --fuzz-dir fuzz "$target" $corpora -- -max_total_time="$SECONDS_PER_TARGET" >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "fuzz smoke: $target FAILED" >&2
        exit 1
    fi
    grep -E '^Done|DONE' "$log" | tail -n 1 || true
done
