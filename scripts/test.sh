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
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
scripts/fuzz-smoke.sh
# Benchmark smoke: a small run proves the bench works; its figures are printed, never asserted.
cargo build --quiet --locked -p bench
target/debug/ipam-bench --calls 20 --workers 4
target/debug/vnet-bench --pods 10 --workers 4
target/debug/policy-bench --small
