#!/usr/bin/env bash
# Kubernetes' own NetworkPolicy e2e suite (v1.20: test/e2e/network/network_policy.go) against a
# 2-node lab cluster: kubelet + containerd, azure-vnet as the only CNI, azure-npm as the
# DaemonSet from manifests/. Needs root.
# Usage: scripts/e2e.sh [--mode bridge|transparent] [--dataplane nftables|iptables] [--parallel N]
#   (N ginkgo nodes, default 1; without --dataplane the DaemonSet's shipped `auto`)
# Builds e2e.test and agnhost from Debian's kubernetes sources once (scripts/kube/build.sh --e2e).
# Last line: e2e netpol: N passed, M failed, K skipped
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "$(id -u)" -ne 0 ]]; then
    echo "e2e.sh: the lab needs root (network namespaces); run: sudo scripts/e2e.sh" >&2
    exit 1
fi
mode=bridge
parallel=1
dataplane=()
while (($#)); do
    case "$1" in
        --mode) mode="$2"; shift 2 ;;
        --parallel) parallel="$2"; shift 2 ;;
        --dataplane) dataplane=(--dataplane "$2"); shift 2 ;;
        *) echo "usage: scripts/e2e.sh [--mode bridge|transparent] [--dataplane nftables|iptables] [--parallel N]" >&2; exit 2 ;;
    esac
done
start=$(date +%s)
scripts/install-deps.sh
log=$(mktemp)
if ! scripts/kube/build.sh --e2e >"$log" 2>&1; then
    tail -n 40 "$log"; echo "e2e.sh: building Kubernetes failed" >&2; exit 1
fi
kube="$(tail -n 1 "$log")"
rm -f "$log"
cargo build --quiet --locked --workspace
lab="target/debug/azure-lab --name e2e"
$lab down >/dev/null 2>&1 || true
trap '$lab down >/dev/null 2>&1 || true' EXIT
$lab up --kube --nodes 2 --mode "$mode" "${dataplane[@]}"
echo "e2e: azure-npm chose, per node:"
$lab kubectl -n kube-system logs -l app.kubernetes.io/name=azure-npm --tail=-1 2>/dev/null \
    | grep -o 'dataplane: .*' | sed 's/^/  /' || true
report="$(mktemp -d)"
cp_ns=azl-e2e-cp
kubeconfig=/run/azure-lab/e2e/control-plane/admin.kubeconfig

# Specs of the 1.20 suite that need what this lab cannot have, with the reason; skipped, and
# counted as skipped, never as passed.
skip_regex='SCTPConnectivity'
skip_reason='needs SCTP in the kernel (these kernels have no sctp module)'
focus='NetworkPolicy'
list() { "$kube/e2e.test" --kubeconfig "$kubeconfig" --provider skeleton --ginkgo.dryRun --ginkgo.noColor \
    --ginkgo.focus="$focus" "$@" 2>/dev/null | grep -o '"msg":"PASSED [^"]*"' | sed 's/"msg":"PASSED //; s/"$//'; }
all="$(list)"
skipped_by_us="$(list --ginkgo.skip="$skip_regex" | sort | comm -23 <(echo "$all" | sort) -)"
echo "e2e: $(grep -c . <<<"$all") NetworkPolicy specs in the 1.20 suite; skipped here:"
while read -r s; do [[ -n "$s" ]] && echo "  SKIP ($skip_reason): $s"; done <<<"$skipped_by_us"

suite_start=$(date +%s)
set +e
suite_args=(--kubeconfig "$kubeconfig" --provider skeleton --num-nodes 2 --disable-log-dump
    --report-dir "$report" --node-os-distro debian)
if ((parallel > 1)); then
    ip netns exec "$cp_ns" "$kube/ginkgo" -nodes="$parallel" -noColor -v -focus="$focus" \
        -skip="$skip_regex" "$kube/e2e.test" -- "${suite_args[@]}" >"$report/e2e.log" 2>&1
else
    ip netns exec "$cp_ns" "$kube/e2e.test" "${suite_args[@]}" --ginkgo.focus="$focus" \
        --ginkgo.skip="$skip_regex" --ginkgo.noColor --ginkgo.v >"$report/e2e.log" 2>&1
fi
set -e
suite_end=$(date +%s)
# Per spec, the suite's progress reporter prints {"msg":"PASSED|FAILED|SKIPPED <spec>"}.
outcome() { { grep -o "\"msg\":\"$1 [^\"]*\"" "$report/e2e.log" || true; } | sed "s/\"msg\":\"$1 //; s/\"\$//"; }
count() { grep -c . <<<"$1" || true; }
passed_specs="$(outcome PASSED)"; failed_specs="$(outcome FAILED)"; skipped_specs="$(outcome SKIPPED)"
while read -r s; do [[ -n "$s" ]] && echo "  PASS: $s"; done <<<"$passed_specs"
while read -r s; do [[ -n "$s" ]] && echo "  FAIL: $s"; done <<<"$failed_specs"
while read -r s; do [[ -n "$s" ]] && echo "  SKIP (by the suite at run time; see the log for why): $s"; done <<<"$skipped_specs"
total="$(count "$all")"
passed="$(count "$passed_specs")"
failed="$(count "$failed_specs")"
skipped=$(( $(count "$skipped_by_us") + $(count "$skipped_specs") ))
# A spec that should have run and did not (the suite crashed or hung) counts as failed.
not_run=$(( total - passed - failed - skipped ))
if (( not_run > 0 )); then
    tail -n 40 "$report/e2e.log"
    echo "e2e.sh: $not_run specs did not run (counted as failed); the log: $report/e2e.log" >&2
    failed=$(( failed + not_run ))
fi
echo "e2e: the suite took $(( suite_end - suite_start )) s (whole script $(( $(date +%s) - start )) s); log: $report/e2e.log"
echo "e2e netpol: $passed passed, $failed failed, $skipped skipped"
(( failed == 0 ))
