#!/usr/bin/env bash
# Builds the local control plane's binaries (kube-apiserver, etcd, kubectl) from
# their published Go modules, pinned by go.mod/go.sum beside this script, into
# a cache outside the repository:
#
#   ${CVK_CACHE_DIR:-~/.cache/cvk}/control-plane/k8s-<version>-etcd-<version>/
#
# Built once; later runs find the binaries and return at once. Prints the
# directory on its last line. Set CVK_CONTROL_PLANE_BIN (or KUBEBUILDER_ASSETS,
# as controller-runtime's envtest does) to use binaries you already have; then
# nothing is built.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

k8s_version=$(awk '$1=="k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$here/go.mod")
etcd_version=$(awk '$1=="go.etcd.io/etcd/server/v3" && $2 ~ /^v/ {print $2; exit}' "$here/go.mod")
[ -n "$k8s_version" ] && [ -n "$etcd_version" ] || { echo "build.sh: cannot read the pinned versions from $here/go.mod" >&2; exit 1; }

for var in CVK_CONTROL_PLANE_BIN KUBEBUILDER_ASSETS; do
  dir="${!var:-}"
  if [ -n "$dir" ]; then
    for bin in kube-apiserver etcd; do
      [ -x "$dir/$bin" ] || { echo "build.sh: $var=$dir has no executable $bin" >&2; exit 1; }
    done
    echo "using the control plane binaries in $var=$dir"
    echo "$dir"
    exit 0
  fi
done

out="${CVK_CACHE_DIR:-$HOME/.cache/cvk}/control-plane/k8s-${k8s_version}-etcd-${etcd_version}"
if [ -x "$out/kube-apiserver" ] && [ -x "$out/etcd" ] && [ -x "$out/kubectl" ]; then
  echo "control plane binaries are cached in $out"
  echo "$out"
  exit 0
fi

command -v go >/dev/null || { echo "build.sh: go is not installed; it is needed once to build kube-apiserver and etcd" >&2; exit 1; }
mkdir -p "$out"
tmp=$(mktemp -d "$out/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

minor=${k8s_version#v1.}; minor=${minor%%.*}
build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done

export CGO_ENABLED=0 GOFLAGS=-mod=readonly GOTOOLCHAIN=local
cd "$here"
echo "==> downloading Go modules for kubernetes $k8s_version and etcd $etcd_version (first run only)"
go mod download
started=$(date +%s)
build() { # name package
  echo "==> building $1 from $2 ($(date -u +%H:%M:%S); this takes minutes on a small machine)"
  go build -trimpath -ldflags "$ldflags" -o "$tmp/$1" "$2"
}
build etcd go.etcd.io/etcd/server/v3
build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
build kubectl k8s.io/kubernetes/cmd/kubectl
mv "$tmp"/etcd "$tmp"/kube-apiserver "$tmp"/kubectl "$out"/
echo "==> built in $(( $(date +%s) - started ))s: $("$out/kube-apiserver" --version), etcd $("$out/etcd" --version | awk '/etcd Version/{print $3}')"
echo "$out"
