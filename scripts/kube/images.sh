#!/usr/bin/env bash
# Build the lab cluster's container images as docker-archive tarballs (no registry is reachable):
#   pause.tar      k8s.gcr.io/pause:3.2                        (containerd's sandbox image)
#   busybox.tar    docker.io/library/busybox:1.29              (busybox-static: sh, nc, sleep, ...)
#   agnhost.tar    k8s.gcr.io/e2e-test-images/agnhost:2.21     (only when KUBE_DIR/agnhost exists)
#   azure-npm.tar  ghcr.io/azure-cni-rs/azure-npm:0.1.0        (the agent + ipset + iptables)
# Usage: scripts/kube/images.sh OUT_DIR KUBE_DIR BIN_DIR   (BIN_DIR holds azure-npm)
# Names are the ones kubelet, manifests/ and the 1.20 e2e suite ask for.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$1" kube="$2" bin="$3"
mkdir -p "$out"
img() { python3 "$here/image.py" "$@"; }
src="$(find "$kube/src" -maxdepth 1 -type d -name 'kubernetes-*' 2>/dev/null | head -1 || true)"

if [[ ! -s "$out/pause.tar" ]]; then
    pause_c="$src/build/pause/linux/pause.c"
    [[ -f "$pause_c" ]] || { echo "images.sh: $pause_c is missing (scripts/kube/build.sh)" >&2; exit 1; }
    gcc -Os -static -DVERSION=3.2 -o "$out/pause" "$pause_c"
    img "$out/pause.tar" k8s.gcr.io/pause:3.2 --entrypoint '["/pause"]' --file "$out/pause:/pause"
fi

# busybox-static and the links for its applets, shared by busybox and agnhost.
links=()
for a in $(/bin/busybox --list); do links+=(--link "/bin/busybox:/bin/$a"); done
if [[ ! -s "$out/busybox.tar" ]]; then
    img "$out/busybox.tar" docker.io/library/busybox:1.29 --cmd '["sh"]' \
        --file /bin/busybox:/bin/busybox "${links[@]}"
fi
if [[ -x "$kube/agnhost" && ! -s "$out/agnhost.tar" ]]; then
    img "$out/agnhost.tar" k8s.gcr.io/e2e-test-images/agnhost:2.21 \
        --entrypoint '["/agnhost"]' --cmd '["pause"]' \
        --file "$kube/agnhost:/agnhost" --file /bin/busybox:/bin/busybox "${links[@]}"
fi

# The agent, rebuilt every time (it is the thing under test). iptables as the node has it (the
# node's alternative: nft or legacy), so the agent and kube-proxy write the same backend.
# /etc/protocols: ipset and iptables resolve "tcp" through it (without it every named-port set
# fails to load: "cannot parse 'tcp' as a protocol", found by the e2e suite).
iptables="$(readlink -f /usr/sbin/iptables)"
multi="$(readlink -f "$iptables")"
xt=(--link "$multi:/usr/sbin/iptables" --link "$multi:/usr/sbin/iptables-save"
    --link "$multi:/usr/sbin/iptables-restore" --link "$multi:/usr/sbin/ip6tables"
    --link "$multi:/usr/sbin/ip6tables-save" --link "$multi:/usr/sbin/ip6tables-restore")
modules=()
for m in /usr/lib/x86_64-linux-gnu/xtables/*.so; do
    modules+=(--elf "$m:$m")
done
img "$out/azure-npm.tar" ghcr.io/azure-cni-rs/azure-npm:0.1.0 --entrypoint '["/usr/bin/azure-npm"]' \
    --elf "$bin/azure-npm:/usr/bin/azure-npm" --elf "/usr/sbin/ipset:/usr/sbin/ipset" \
    --elf "$multi:$multi" "${xt[@]}" "${modules[@]}" \
    --file /etc/protocols:/etc/protocols --file /etc/services:/etc/services \
    --file /bin/busybox:/bin/busybox --link /bin/busybox:/bin/sh
echo "$out"
