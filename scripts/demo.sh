#!/bin/sh
# The demo, one command on a fresh Debian machine (as root, Rust toolchain present): installs the
# OS packages, builds, brings up a 3-node lab (an Azure VNet in network namespaces that enforces
# Azure's rules: one ARP answer for every address, delivery by owned IP, spoofed frames dropped;
# host-agent emulators, pods attached through azure-vnet + azure-vnet-ipam, azure-npm on every
# node), probes real connections before and after the app's policies, explains a few verdicts
# from the kernel's own state, shows what the VNet dropped, scrapes /metrics, and tears
# everything down (also on Ctrl-C or failure).
#
# Usage: scripts/demo.sh [--mode bridge|transparent] [--dataplane nftables|iptables]
#   (azure-vnet's mode, bridge by default; what azure-npm programs, nftables by default)
set -eu
cd "$(dirname "$0")/.."
mode=bridge
dataplane=nftables
usage="usage: scripts/demo.sh [--mode bridge|transparent] [--dataplane nftables|iptables]"
while [ $# -gt 0 ]; do
    case "$1" in
        --mode) mode="${2:-}"; shift 2 ;;
        --mode=*) mode="${1#--mode=}"; shift ;;
        --dataplane) dataplane="${2:-}"; shift 2 ;;
        --dataplane=*) dataplane="${1#--dataplane=}"; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "demo.sh: unknown argument $1 ($usage)" >&2; exit 2 ;;
    esac
done
case "$mode" in
    bridge|transparent) ;;
    *) echo "demo.sh: --mode is bridge or transparent, not '$mode'" >&2; exit 2 ;;
esac
case "$dataplane" in
    nftables|iptables) ;;
    *) echo "demo.sh: --dataplane is nftables or iptables, not '$dataplane'" >&2; exit 2 ;;
esac
if [ "$(id -u)" -ne 0 ]; then
    echo "demo.sh: the lab builds network namespaces; run: sudo scripts/demo.sh" >&2
    exit 1
fi
scripts/install-deps.sh
echo "== building (debug, the plugins, the agent and the lab)"
cargo build --quiet --locked -p cni -p npm -p lab --bins
bin="$PWD/target/debug"
lab() { "$bin/azure-lab" --name demo "$@"; }
lab down >/dev/null 2>&1 || true # left over from an interrupted run
trap 'lab down >/dev/null 2>&1 || true' EXIT INT TERM
say() { printf '\n== %s\n' "$*"; }

say "a 3-node lab ($mode mode, azure-npm on $dataplane) with a frontend, a backend and a database (testdata/lab/app.yaml)"
lab up --objects testdata/lab/app.yaml --external 203.0.113.9 --serve TCP/8080 --serve TCP/5432 --mode "$mode" \
    --dataplane "$dataplane"

say "no policies yet: every pair connects (real TCP connections to the API port 8080)"
lab probe --protocol TCP --port 8080

say "applying testdata/lab/policies.yaml: api only from the frontend's web pods, db only from the backend"
lab apply --objects testdata/lab/app.yaml --objects testdata/lab/policies.yaml
for port in 8080 5432; do
    say "TCP/$port after the policies (checked against the compiled engine with --expect)"
    lab probe --protocol TCP --port "$port" --expect
done

objects=/run/azure-lab/demo/objects/cluster.yaml
say "why? azure-npm debug explain, judged from the policies and from node-3's kernel (--dataplane)"
lab exec --node node-3 -- "$bin/azure-npm" debug explain --objects "$objects" \
    --from backend/api-1 --to db/postgres --protocol TCP --port 5432 --dataplane "$dataplane"
lab exec --node node-3 -- "$bin/azure-npm" debug explain --objects "$objects" \
    --from frontend/web-1 --to db/postgres --protocol TCP --port 5432 --dataplane "$dataplane"
lab exec --node node-2 -- "$bin/azure-npm" debug explain --objects "$objects" \
    --from frontend/web-2 --to backend/api-1 --protocol TCP --port 8080 --dataplane "$dataplane"

if [ "$dataplane" = nftables ]; then
    say "what node-3's agent programmed: its own table (nft list table inet azure-npm; the ingress groups)"
    lab exec --node node-3 -- nft list table inet azure-npm | sed -n '/chain ingress-/,/}/p'
fi

say "what the VNet dropped per node (Azure's anti-spoofing must drop nothing: --expect)"
lab vnet --expect

say "node-3's azure-npm metrics (http://127.0.0.1:10091/metrics inside the node)"

lab metrics --node node-3 | grep -v -e _bucket -e '^# '

say "tearing down"
lab down
trap - EXIT INT TERM
