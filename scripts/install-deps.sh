#!/bin/sh
# Installs the Debian packages the tests, benchmarks and lab use. Needs root.
set -eu
if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps.sh: must run as root (apt-get)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# containernetworking-plugins: the reference bridge and host-local plugins (interop, benchmarks)
# iproute2/iputils-ping: network namespaces and probes; ipset/iptables: the dataplane;
# nftables: azure-vnet's MAC translation table (bridge mode) and the lab's Azure-faithful VNet
# containerd/runc/busybox-static/gcc: the lab's real Kubernetes nodes (azure-lab up --kube) and
# their locally built images (installing containerd does not start it here)
# etcd-server/openssl: the real API server the agent's tests run against (built by scripts/kube/)
apt-get install -y -qq containernetworking-plugins iproute2 iputils-ping ipset iptables nftables procps util-linux python3 \
    etcd-server openssl containerd runc busybox-static gcc libc6-dev >/dev/null
