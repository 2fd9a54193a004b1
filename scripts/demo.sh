#!/bin/sh
# The demo. The full multi-node lab (pods attached through azure-vnet, azure-npm enforcing with
# real packets) arrives with the lab issue; until then this shows the policy engine on a
# 3-namespace, 9-pod snapshot: the matrix before and after a policy, and one explained verdict.
set -eu
cd "$(dirname "$0")/.."
cargo build --quiet --release -p npm
npm=target/release/azure-npm
echo "== No policies: every pod reaches every pod (TCP/80) =="
$npm debug reachability --objects testdata/policy/00-no-policies.yaml --protocol TCP --port 80 --external 203.0.113.9
echo
echo "== x/a admits only pod b of namespace y (testdata/policy/04-...) =="
$npm debug reachability --objects testdata/policy/04-namespace-and-pod-selector-and.yaml --protocol TCP --port 80 --external 203.0.113.9
echo
echo "== Why is y/a -> x/a denied? =="
$npm debug explain --objects testdata/policy/04-namespace-and-pod-selector-and.yaml --from y/a --to x/a --protocol TCP --port 80
echo
echo "The network-namespace lab (real pods, real packets) is not built yet; the CNI plugins are"
echo "exercised end to end by: sudo cargo test -p cni --test vnet_lab -- --nocapture"
