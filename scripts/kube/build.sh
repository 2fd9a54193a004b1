#!/usr/bin/env bash
# Build real Kubernetes v1.20.2 binaries from Debian's `kubernetes` source package.
# Usage: scripts/kube/build.sh [--e2e] [OUT_DIR]     (default OUT_DIR: target/kube)
#   without --e2e: kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy
#   with --e2e:    also e2e.test, agnhost and ginkgo (for scripts/e2e.sh; a few more minutes)
# Prints the output directory last. Idempotent: binaries already in OUT_DIR are kept, and the
# prepared source tree (OUT_DIR/src) and Go build cache are reused by later runs. Needs root for apt.
# Facts and obstacles: ../shared/KUBE-APISERVER.md and ../shared/KUBE-NODE.md.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
e2e=0
if [[ "${1:-}" == "--e2e" ]]; then e2e=1; shift; fi
out="$(mkdir -p "${1:-$repo/target/kube}" && cd "${1:-$repo/target/kube}" && pwd)"

want=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
pkgs=(./cmd/kube-apiserver ./cmd/kube-controller-manager ./cmd/kube-scheduler ./cmd/kubelet ./cmd/kube-proxy)
if ((e2e)); then
    want+=(e2e.test agnhost ginkgo)
fi
missing=()
for b in "${want[@]}"; do [[ -x "$out/$b" ]] || missing+=("$b"); done
if ((${#missing[@]} == 0)); then
    echo "$out"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q golang-1.19-go etcd-server golang-github-modern-go-reflect2-dev openssl dpkg-dev rsync >&2

work="$out/src"
tree="$(find "$work" -maxdepth 1 -type d -name 'kubernetes-*' 2>/dev/null | head -1 || true)"
if [[ -z "$tree" || ! -f "$work/prepared" ]]; then
    # A private apt configuration with a deb-src line for the archive this machine already uses.
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
    # 1. vendor/modules.txt in the pre-1.17 layout; 2. reflect2 1.0.1 crashes under Go >= 1.18
    # (delete the vendored copy first: leftover go_below_*.go files would break the build).
    python3 "$repo/scripts/kube/vendor-modules.py" vendor/modules.txt vendor/modules.txt \
        github.com/modern-go/reflect2 v1.0.2
    sed -i 's|github.com/modern-go/reflect2 v1.0.1|github.com/modern-go/reflect2 v1.0.2|g' go.mod
    rm -rf vendor/github.com/modern-go/reflect2
    cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 vendor/github.com/modern-go/reflect2
    rm -f vendor/github.com/modern-go/reflect2/go.mod
    # 3. The generated OpenAPI file is not in the tarball: the tree's own generator makes it.
    export PATH="/usr/lib/go-1.19/bin:$PATH" GOFLAGS=-mod=vendor GOPROXY=off CGO_ENABLED=0 GOCACHE="$out/gocache"
    make gen_openapi >&2
    touch "$work/prepared"
fi
cd "$tree"
export PATH="/usr/lib/go-1.19/bin:$PATH" GOFLAGS=-mod=vendor GOPROXY=off CGO_ENABLED=0 GOCACHE="$out/gocache"

tmp="$out/.build"
rm -rf "$tmp" && mkdir -p "$tmp"
todo=()
for i in "${!pkgs[@]}"; do [[ -x "$out/${want[$i]}" ]] || todo+=("${pkgs[$i]}"); done
if ((${#todo[@]})); then
    # One `go build` for all of them: the shared packages compile once.
    go build -p 2 -o "$tmp/" "${todo[@]}" >&2
fi
if ((e2e)); then
    # The e2e suite embeds its manifests: the tree's own generator writes that file.
    # (hack/generate-bindata.sh assumes a GOPATH checkout, so its steps are done here.)
    if [[ ! -f test/e2e/generated/bindata.go ]]; then
        go build -o "$out/.go-bindata" ./vendor/github.com/go-bindata/go-bindata/go-bindata >&2
        "$out/.go-bindata" -nometadata -o test/e2e/generated/bindata.go.tmp -pkg generated \
            -ignore .jpg -ignore .png -ignore .md -ignore 'BUILD(\.bazel)?' \
            test/conformance/testdata/... test/e2e/testing-manifests/... \
            test/e2e_node/testing-manifests/... test/images/... test/fixtures/... >&2
        mv test/e2e/generated/bindata.go.tmp test/e2e/generated/bindata.go
        rm -f "$out/.go-bindata"
    fi
    [[ -x "$out/e2e.test" ]] || go test -c -o "$tmp/e2e.test" ./test/e2e >&2
    [[ -x "$out/agnhost" ]] || go build -o "$tmp/agnhost" ./test/images/agnhost >&2
    # The suite's runner, for parallel specs (scripts/e2e.sh --parallel N).
    [[ -x "$out/ginkgo" ]] || go build -o "$tmp/ginkgo" ./vendor/github.com/onsi/ginkgo/ginkgo >&2
fi
for f in "$tmp"/*; do [[ -e "$f" ]] && mv "$f" "$out/"; done
rmdir "$tmp"
echo "$out"
