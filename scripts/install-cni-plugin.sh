#!/bin/sh
# Installs azure-vnet and azure-vnet-ipam and the conflist on this node (what the azure-cni
# DaemonSet's init container runs). Usage:
#   install-cni-plugin.sh [VERSION] [--from DIR]
# VERSION (default: the workspace's) must be what the binaries report; --from DIR holds them
# (default: target/release, built with cargo when missing). Destinations: CNI_BIN_DIR
# (/opt/cni/bin), CNI_CONF_DIR (/etc/cni/net.d); the conflist comes from CNI_CONFLIST
# (default: manifests/10-azure.conflist). Files are replaced atomically (copy, then rename), so a
# runtime exec'ing the plugin mid-install gets the old or the new binary, never half of one.
set -eu
repo="$(cd "$(dirname "$0")/.." 2>/dev/null && pwd || echo /)"
version=""
from=""
while [ $# -gt 0 ]; do
    case "$1" in
        --from) from="$2"; shift 2 ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        -*) echo "install-cni-plugin.sh: unknown option $1" >&2; exit 2 ;;
        *) version="$1"; shift ;;
    esac
done
if [ -z "$version" ]; then
    version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n 1)"
fi
bin_dir="${CNI_BIN_DIR:-/opt/cni/bin}"
conf_dir="${CNI_CONF_DIR:-/etc/cni/net.d}"
conflist="${CNI_CONFLIST:-$repo/manifests/10-azure.conflist}"
if [ -z "$from" ]; then
    from="$repo/target/release"
    if [ ! -x "$from/azure-vnet" ] || [ ! -x "$from/azure-vnet-ipam" ]; then
        (cd "$repo" && cargo build --release --locked -p cni --bin azure-vnet --bin azure-vnet-ipam)
    fi
fi
for plugin in azure-vnet azure-vnet-ipam; do
    [ -x "$from/$plugin" ] || { echo "install-cni-plugin.sh: $from/$plugin is missing" >&2; exit 1; }
    reported="$("$from/$plugin" --version | awk '{print $2}')"
    if [ "$reported" != "$version" ]; then
        echo "install-cni-plugin.sh: $from/$plugin is version $reported, not $version" >&2
        exit 1
    fi
done
[ -f "$conflist" ] || { echo "install-cni-plugin.sh: no conflist at $conflist" >&2; exit 1; }
mkdir -p "$bin_dir" "$conf_dir"
for plugin in azure-vnet azure-vnet-ipam; do
    cp "$from/$plugin" "$bin_dir/.$plugin.new"
    chmod 0755 "$bin_dir/.$plugin.new"
    mv -f "$bin_dir/.$plugin.new" "$bin_dir/$plugin"
done
cp "$conflist" "$conf_dir/.10-azure.conflist.new"
chmod 0644 "$conf_dir/.10-azure.conflist.new"
mv -f "$conf_dir/.10-azure.conflist.new" "$conf_dir/10-azure.conflist"
echo "installed azure-vnet $version and azure-vnet-ipam $version into $bin_dir, 10-azure.conflist into $conf_dir"
