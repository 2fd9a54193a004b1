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
# Real Kubernetes binaries from Debian's sources (once per machine): the API server for the
# agent's kube tests; control plane, kubelet and kube-proxy for the lab's real-node smoke.
log=$(mktemp)
if ! scripts/kube/build.sh >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "test.sh: building Kubernetes failed" >&2
    exit 1
fi
echo "kubernetes: $(tail -n 1 "$log")"
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
