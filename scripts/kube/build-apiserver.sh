#!/usr/bin/env bash
# Build a real kube-apiserver from Debian's `kubernetes` source package, for azure-npm's tests.
# Usage: scripts/kube/build-apiserver.sh [OUT_DIR]   (default: target/kube; prints the binary path)
# Needs root for apt. Facts and obstacles: ../shared/KUBE-APISERVER.md. Idempotent: an existing
# OUT_DIR/kube-apiserver is kept.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
out="$(mkdir -p "${1:-$repo/target/kube}" && cd "${1:-$repo/target/kube}" && pwd)"
if [[ -x "$out/kube-apiserver" ]]; then
    echo "$out/kube-apiserver"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q golang-1.19-go etcd-server golang-github-modern-go-reflect2-dev openssl dpkg-dev rsync >&2

# A private apt configuration with a deb-src line for the archive this machine already uses.
work="$out/src"
rm -rf "$work" && mkdir -p "$work/apt/lists/partial"
archive="$(awk '/^URIs:/ && /debian$/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
archive="${archive:-$(awk '/^deb / && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)}"
archive="${archive:-http://deb.debian.org/debian}"
suite="$(. /etc/os-release && echo "$VERSION_CODENAME")"
echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $archive $suite main" >"$work/apt/sources.list"
apt_private=(-o "Dir::Etc::sourcelist=$work/apt/sources.list" -o "Dir::Etc::sourceparts=-"
    -o "Dir::State::Lists=$work/apt/lists")
apt-get "${apt_private[@]}" update >&2
(cd "$work" && apt-get "${apt_private[@]}" source kubernetes >&2)
tree="$(find "$work" -maxdepth 1 -type d -name 'kubernetes-*' | head -1)"
[[ -n "$tree" ]] || { echo "apt-get source kubernetes produced no tree" >&2; exit 1; }
cd "$tree"

# 1. vendor/modules.txt in the pre-1.17 layout; 2. reflect2 1.0.1 crashes under Go >= 1.18.
python3 "$repo/scripts/kube/vendor-modules.py" vendor/modules.txt vendor/modules.txt \
    github.com/modern-go/reflect2 v1.0.2
sed -i 's|github.com/modern-go/reflect2 v1.0.1|github.com/modern-go/reflect2 v1.0.2|g' go.mod
rm -rf vendor/github.com/modern-go/reflect2
cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 vendor/github.com/modern-go/reflect2
rm -f vendor/github.com/modern-go/reflect2/go.mod

# 3. The generated OpenAPI file is not in the tarball: the tree's own generator makes it.
export PATH="/usr/lib/go-1.19/bin:$PATH" GOFLAGS=-mod=vendor GOPROXY=off CGO_ENABLED=0
export GOCACHE="$out/gocache"
make gen_openapi >&2
go build -o "$out/kube-apiserver.tmp" ./cmd/kube-apiserver >&2
mv "$out/kube-apiserver.tmp" "$out/kube-apiserver"
rm -rf "$work" "$GOCACHE"
echo "$out/kube-apiserver"
