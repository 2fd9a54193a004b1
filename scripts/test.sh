#!/bin/sh
# The whole test suite, as CI runs it: OS packages, format, lints, tests, fuzz smoke.
# Needs root: the integration tests build network namespaces (and only touch those).
set -eu
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: the integration tests need root (network namespaces); run: sudo scripts/test.sh" >&2
    exit 1
fi
scripts/install-deps.sh
# A real kube-apiserver from Debian's sources, for the agent's kube tests (once per machine).
log=$(mktemp)
if ! scripts/kube/build-apiserver.sh >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "test.sh: building kube-apiserver failed" >&2
    exit 1
fi
echo "kube-apiserver: $(tail -n 1 "$log")"
rm -f "$log"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
scripts/fuzz-smoke.sh
# Benchmark smoke: a small run proves the bench works; its figures are printed, never asserted.
cargo build --quiet --locked -p bench
target/debug/ipam-bench --calls 20 --workers 4
target/debug/vnet-bench --pods 10 --workers 4
target/debug/policy-bench --small
target/debug/npm-bench --small
