#!/bin/sh
# A longer fuzz run than CI's smoke: every target for MINUTES minutes (default 5), then the
# corpus it grew is minimised into fuzz/seeds/TARGET (committed), keeping only inputs that add
# coverage. A crash stops the run and leaves its input in fuzz/artifacts/TARGET (fix the cause,
# keep the input as a seed or a regression test).
# Usage: scripts/fuzz.sh [MINUTES] [TARGET...]
set -eu
cd "$(dirname "$0")/.."
minutes="${1:-5}"
case "$minutes" in
    ''|*[!0-9]*|0) echo "usage: scripts/fuzz.sh [MINUTES >= 1] [TARGET...]" >&2; exit 2 ;;
esac
# FUZZ_SECONDS overrides the time per target (a quick try of this script).
seconds="${FUZZ_SECONDS:-$((minutes * 60))}"
[ $# -gt 0 ] && shift
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
targets="$*"
[ -n "$targets" ] || targets=$(cargo fuzz list --fuzz-dir fuzz)
for target in $targets; do
    mkdir -p "fuzz/corpus/$target" "fuzz/seeds/$target"
    before=$(find "fuzz/seeds/$target" -type f | wc -l)
    echo "fuzz: $target for ${seconds} s"
    cargo fuzz run --fuzz-dir fuzz "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
        -max_total_time="$seconds" 2>&1 | grep -E '^(Done|#[0-9]+ *DONE)|ERROR|panicked' || true
    # libFuzzer's merge keeps the inputs of the first corpus plus those of the others that add
    # coverage: seeds stay small and only grow where the long run found something new.
    merged=$(mktemp -d)
    cargo fuzz cmin --fuzz-dir fuzz "$target" "fuzz/corpus/$target" >/dev/null 2>&1 || true
    cp -r "fuzz/seeds/$target/." "$merged/" 2>/dev/null || true
    cargo fuzz run --fuzz-dir fuzz "$target" "$merged" "fuzz/corpus/$target" -- -merge=1 >/dev/null 2>&1 || true
    rm -rf "fuzz/seeds/$target" && mv "$merged" "fuzz/seeds/$target"
    after=$(find "fuzz/seeds/$target" -type f | wc -l)
    echo "fuzz: $target seeds $before -> $after"
done
