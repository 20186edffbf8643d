#!/usr/bin/env bash
# Builds, with no container registry, the kind node image this project's
# cluster runs, and everything it is made of:
#
#   DOCKER_HOST=... kind/node/build.sh        # prints node-image=, kind=, kubectl= lines
#   DOCKER_HOST=... kind/node/build.sh bases  # only the two Debian base images
#
# 1. Go binaries, from their published Go modules: the Kubernetes node and
#    control plane binaries (kind/node/go.mod), etcd, kind, containerd v2 with
#    ctr and the runc shim, crictl, and a CoreDNS with kubeadm's plugins
#    (kind/node/coredns). The pause program is Kubernetes' own pause.c,
#    compiled statically.
# 2. Two Debian root filesystems from Debian's packages (mmdebstrap): the
#    node's (systemd and what kind's base image installs) and a minimal
#    runtime (glibc) for the project's own images.
# 3. Docker images: the two bases, the control plane component images under
#    the names kubeadm expects (registry.k8s.io/...), kind's base image
#    reproduced from kind's own files, and the node image assembled as
#    `kind build node-image` does: binaries in /usr/bin, the component images
#    imported into the node's containerd, committed.
#
# Everything is cached under ${CVK_CACHE_DIR:-~/.cache/cvk}/kind and in the
# Docker engine; a second run checks and returns in seconds. The versions are
# in versions.env and go.mod beside this script; changing either, or this
# script, or the files under kind/node/files, gives a new node image tag.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.env
. "$here/versions.env"
cache="${CVK_CACHE_DIR:-$HOME/.cache/cvk}/kind"
mkdir -p "$cache"

step() { printf '[node-image %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { printf 'kind/node/build.sh: %s\n' "$*" >&2; exit 1; }

for tool in go docker mmdebstrap gcc jq tar sha256sum; do
  command -v "$tool" >/dev/null || die "$tool is not installed (.ci/run and kind/host/install.sh install what this needs)"
done
docker version --format '{{.Server.Version}}' >/dev/null 2>&1 \
  || die "no Docker engine answers${DOCKER_HOST:+ at DOCKER_HOST=$DOCKER_HOST}: run kind/host/docker.sh up and export the DOCKER_HOST it prints"

k8s_version=$(awk '$1=="k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$here/go.mod")
etcd_version=$(awk '$1=="go.etcd.io/etcd/server/v3" && $2 ~ /^v/ {print $2; exit}' "$here/go.mod")
[ -n "$k8s_version" ] && [ -n "$etcd_version" ] || die "cannot read the pinned versions from $here/go.mod"
minor=${k8s_version#v1.}; minor=${minor%%.*}

export GOTOOLCHAIN=local CGO_ENABLED=0
gomodcache=$(go env GOMODCACHE)

# ---- 1. Go binaries ---------------------------------------------------------
k8s_bin="$cache/k8s-$k8s_version-etcd-$etcd_version"
k8s_cmds=(kubeadm kubelet kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy)
build_k8s() {
  local missing=()
  for c in "${k8s_cmds[@]}" etcd; do [ -x "$k8s_bin/$c" ] || missing+=("$c"); done
  [ "${#missing[@]}" -eq 0 ] && { step "Kubernetes $k8s_version binaries: cached in $k8s_bin"; return; }
  local tmp; tmp=$(mktemp -d "$cache/.k8s.XXXXXX")
  # The local control plane (harness/control-plane/build.sh) builds
  # kube-apiserver, kubectl and etcd of the same versions with the same
  # flags: take those rather than build them twice.
  local cp_bin="${CVK_CACHE_DIR:-$HOME/.cache/cvk}/control-plane/k8s-$k8s_version-etcd-$etcd_version"
  local still=()
  for c in "${missing[@]}"; do
    if [ -x "$cp_bin/$c" ]; then cp "$cp_bin/$c" "$tmp/$c"; step "$c: from the local control plane's cache"; else still+=("$c"); fi
  done
  missing=("${still[@]}")
  local ldflags="-s -w" started; started=$(date +%s)
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  (cd "$here" && GOFLAGS=-mod=readonly go mod download)
  for c in "${missing[@]}"; do
    step "building $c (the first build of the Kubernetes binaries takes 20-40 minutes on two cores)"
    if [ "$c" = etcd ]; then
      (cd "$here" && GOFLAGS=-mod=readonly go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3)
    else
      (cd "$here" && GOFLAGS=-mod=readonly go build -trimpath -ldflags "$ldflags" -o "$tmp/$c" "k8s.io/kubernetes/cmd/$c")
    fi
  done
  mkdir -p "$k8s_bin"
  mv "$tmp"/* "$k8s_bin"/
  rmdir "$tmp"
  step "Kubernetes binaries built in $(( $(date +%s) - started ))s"
}

tools_bin="$cache/tools-kind-$KIND_VERSION-containerd-$CONTAINERD_VERSION-crictl-$CRICTL_VERSION-coredns-$COREDNS_VERSION"
build_tools() {
  local tmp started; started=$(date +%s)
  [ -x "$tools_bin/kind" ] && [ -x "$tools_bin/containerd" ] && [ -x "$tools_bin/ctr" ] \
    && [ -x "$tools_bin/containerd-shim-runc-v2" ] && [ -x "$tools_bin/crictl" ] \
    && [ -x "$tools_bin/coredns" ] && [ -x "$tools_bin/pause" ] \
    && { step "kind, containerd, crictl, CoreDNS, pause: cached in $tools_bin"; return; }
  tmp=$(mktemp -d "$cache/.tools.XXXXXX")
  step "building kind $KIND_VERSION"
  GOBIN="$tmp" GOFLAGS= go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kind@$KIND_VERSION"
  step "building containerd $CONTAINERD_VERSION, ctr and the runc shim"
  GOBIN="$tmp" GOFLAGS= go install -trimpath -tags "no_aufs no_zfs no_btrfs no_devmapper" \
    -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION" \
    "github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION" \
    "github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD_VERSION" \
    "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION"
  step "building crictl $CRICTL_VERSION"
  GOBIN="$tmp" GOFLAGS= go install -trimpath \
    -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION" \
    "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
  step "building CoreDNS $COREDNS_VERSION with kubeadm's plugins (kind/node/coredns)"
  (cd "$here/coredns" && GOFLAGS=-mod=readonly go build -buildvcs=false -trimpath -ldflags "-s -w" -o "$tmp/coredns" .)
  step "compiling Kubernetes' pause.c statically"
  (cd "$here" && GOFLAGS=-mod=readonly go mod download k8s.io/kubernetes)
  gcc -Os -static -Wall -Werror -DVERSION="v$PAUSE_VERSION-cvk" -o "$tmp/pause" \
    "$gomodcache/k8s.io/kubernetes@$k8s_version/build/pause/linux/pause.c"
  strip "$tmp/pause"
  mkdir -p "$tools_bin"
  mv "$tmp"/* "$tools_bin"/
  rmdir "$tmp"
  step "tools built in $(( $(date +%s) - started ))s"
}

# ---- 2. Debian root filesystems --------------------------------------------
# kind's base image package list (images/base/Dockerfile), less the NFS and
# iSCSI clients, plus what kind builds itself and Debian ships: runc, the
# CNI plugins, dbus.
node_packages=systemd,systemd-sysv,dbus,conntrack,iptables,nftables,iproute2,ethtool,util-linux,mount,kmod,libseccomp2,pigz,fuse-overlayfs,bash,ca-certificates,curl,jq,procps,e2fsprogs,containernetworking-plugins,runc
# glibc and the C runtime the Rust binaries link, certificates, time zones:
# what distroless/cc has.
runtime_packages=base-files,libc6,libgcc-s1,netbase,tzdata,ca-certificates
rootfs() { # name variant packages
  local out="$cache/$1-$DEBIAN_SUITE-$(printf '%s' "$2 $3" | sha256sum | cut -c1-12).tar"
  if [ ! -s "$out" ]; then
    step "writing the $1 root filesystem from Debian $DEBIAN_SUITE packages (mmdebstrap, about 3 minutes)"
    mmdebstrap --quiet --variant="$2" --include="$3" --format=tar "$DEBIAN_SUITE" "$out.part" >&2
    mv "$out.part" "$out"
  fi
  printf '%s\n' "$out"
}

# ---- 3. images ---------------------------------------------------------------
have_image() { docker image inspect "$1" >/dev/null 2>&1; }

import_rootfs() { # tar image [docker import --change ...]
  local tar=$1 image=$2; shift 2
  have_image "$image" && return
  step "importing $image"
  docker import "$@" "$tar" "$image" >/dev/null
}

# The runtime base: the extracted packages (no maintainer scripts ran, so no
# shell, no package database) plus what their scripts would have written and
# distroless has: the users (root, nobody, nonroot 65532) and the CA bundle.
runtime_image() { # tar image
  local tar=$1 image=$2
  have_image "$image" && return
  step "importing $image (non-root user 65532)"
  local dir; dir=$(mktemp -d)
  tar -C "$dir" -xf "$tar"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$dir/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' > "$dir/etc/group"
  mkdir -p "$dir/home/nonroot" "$dir/tmp" "$dir/etc/ssl/certs"
  chown 65532:65532 "$dir/home/nonroot"
  chmod 1777 "$dir/tmp"
  find "$dir/usr/share/ca-certificates" -name '*.crt' -print0 | sort -z | xargs -0 cat > "$dir/etc/ssl/certs/ca-certificates.crt"
  tar --numeric-owner -C "$dir" -c . | docker import \
    --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'USER 65532:65532' --change 'WORKDIR /home/nonroot' - "$image" >/dev/null
  rm -rf "$dir"
}

scratch_image() { # image binary-path... (first is the entrypoint)
  local image=$1; shift
  have_image "$image" && return
  local dir; dir=$(mktemp -d)
  mkdir -p "$dir/usr/local/bin" "$dir/tmp" "$dir/etc"
  chmod 1777 "$dir/tmp"
  for b in "$@"; do install -m 0755 "$b" "$dir/usr/local/bin/"; done
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' > "$dir/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\n' > "$dir/etc/group"
  step "image $image"
  tar -C "$dir" -c . | docker import \
    --change "ENTRYPOINT [\"/usr/local/bin/$(basename "$1")\"]" \
    --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' - "$image" >/dev/null
  rm -rf "$dir"
}

build_from() { # image context-dir (Dockerfile inside)
  have_image "$1" && return
  step "building $1"
  docker build --quiet -t "$1" "$2" >/dev/null
}

# The two Debian bases, imported; sets node_base and runtime.
bases() {
  local node_tar runtime_tar
  node_tar=$(rootfs node-rootfs minbase "$node_packages")
  runtime_tar=$(rootfs runtime-rootfs extract "$runtime_packages")
  # The key of every image: versions, this script, the node files, the roots.
  key=$( (cat "$here/versions.env" "$here/go.mod" "$0"; find "$here/files" -type f | sort | xargs cat;
          basename "$node_tar"; basename "$runtime_tar") | sha256sum | cut -c1-12)
  node_base="cvk-local/debian-node:$DEBIAN_SUITE-$key"
  runtime="cvk-local/runtime:$DEBIAN_SUITE-$key"
  import_rootfs "$node_tar" "$node_base"
  runtime_image "$runtime_tar" "$runtime"
}

main() {
  local started; started=$(date +%s)
  build_k8s
  build_tools
  bases
  local kind_base="cvk-local/kind-base:$KIND_VERSION-$key"
  local node_image="cvk-local/kind-node:$k8s_version-$key"

  if have_image "$node_image"; then
    step "node image $node_image: cached"
    report "$node_image"
    return
  fi

  # Component images under the names kubeadm $k8s_version asks for.
  local reg=registry.k8s.io images=()
  for c in kube-apiserver kube-controller-manager kube-scheduler; do
    scratch_image "$reg/$c:$k8s_version" "$k8s_bin/$c"; images+=("$reg/$c:$k8s_version")
  done
  scratch_image "$reg/etcd:$ETCD_IMAGE_TAG" "$k8s_bin/etcd"; images+=("$reg/etcd:$ETCD_IMAGE_TAG")
  scratch_image "$reg/coredns/coredns:$COREDNS_VERSION" "$tools_bin/coredns"
  images+=("$reg/coredns/coredns:$COREDNS_VERSION")
  scratch_image "$reg/pause:$PAUSE_VERSION" "$tools_bin/pause"; images+=("$reg/pause:$PAUSE_VERSION")
  if ! have_image "$reg/pause:$KIND_SANDBOX_PAUSE_VERSION"; then
    docker tag "$reg/pause:$PAUSE_VERSION" "$reg/pause:$KIND_SANDBOX_PAUSE_VERSION"
  fi
  images+=("$reg/pause:$KIND_SANDBOX_PAUSE_VERSION")
  # kube-proxy programs iptables/nftables: it needs the node's userland.
  local ctx; ctx=$(mktemp -d)
  install -m 0755 "$k8s_bin/kube-proxy" "$ctx/kube-proxy"
  printf 'FROM %s\nCOPY kube-proxy /usr/local/bin/kube-proxy\nENTRYPOINT ["/usr/local/bin/kube-proxy"]\n' "$node_base" > "$ctx/Dockerfile"
  build_from "$reg/kube-proxy:$k8s_version" "$ctx"; images+=("$reg/kube-proxy:$k8s_version")
  rm -rf "$ctx"

  # kind's base image, from kind's own files (images/base in the kind module)
  # on the Debian node root filesystem.
  local kind_src="$gomodcache/sigs.k8s.io/kind@$KIND_VERSION"
  [ -d "$kind_src/images/base/files" ] || (cd "$here" && GOFLAGS= go mod download "sigs.k8s.io/kind@$KIND_VERSION")
  ctx=$(mktemp -d)
  mkdir -p "$ctx/overlay/usr/local/bin" "$ctx/overlay/opt/cni/bin"
  cp -r "$kind_src/images/base/files/." "$ctx/overlay/"
  cp -r "$here/files/." "$ctx/overlay/"
  chmod -R u+w "$ctx/overlay"
  for b in containerd ctr containerd-shim-runc-v2 crictl; do install -m 0755 "$tools_bin/$b" "$ctx/overlay/usr/local/bin/"; done
  # Nothing in this node may lower oom_score_adj (the capability is missing
  # on hosts like this one); containerd must not try.
  sed -i 's/^\(\s*restrict_oom_score_adj\s*=\s*\).*/\1true/' "$ctx/overlay/etc/containerd/config.toml"
  cat > "$ctx/Dockerfile" <<DOCKERFILE
FROM $node_base
COPY overlay/ /
RUN chmod 0755 /usr/local/bin/* /kind/bin/* \\
 && find /lib/systemd/system/sysinit.target.wants/ -name "systemd-tmpfiles-setup.service" -delete \\
 && rm -f /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/* \\
 && rm -f /lib/systemd/system/local-fs.target.wants/* /lib/systemd/system/sockets.target.wants/*udev* \\
 && rm -f /lib/systemd/system/sockets.target.wants/*initctl* /lib/systemd/system/basic.target.wants/* \\
 && echo "ReadKMsg=no" >> /etc/systemd/journald.conf \\
 && ln -sf /usr/lib/systemd/systemd /sbin/init \\
 && systemctl enable kubelet.service containerd.service undo-mount-hacks.service \\
 && systemctl mask systemd-binfmt.service \\
 && mkdir -p /etc/kubernetes/manifests \\
 && for p in /usr/lib/cni/*; do ln -sf "\$p" /opt/cni/bin/; done \\
 && ctr oci spec | jq '.hooks.createContainer[.hooks.createContainer| length] |= . + {"path": "/kind/bin/mount-product-files.sh"}' \\
      | jq 'del(.process.rlimits)' > /etc/containerd/cri-base.json \\
 && containerd --version && runc --version
ENV container=docker
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]
DOCKERFILE
  build_from "$kind_base" "$ctx"
  rm -rf "$ctx"

  # The node image, as kind's node-image builder assembles it.
  step "assembling the node image $node_image"
  local id="cvk-node-build-$$"
  docker rm -f "$id" >/dev/null 2>&1 || true
  docker run -d --entrypoint=sleep --name="$id" --security-opt seccomp=unconfined "$kind_base" infinity >/dev/null
  trap 'docker rm -f -v "'"$id"'" >/dev/null 2>&1 || true' EXIT
  for b in kubeadm kubelet kubectl; do
    docker cp "$k8s_bin/$b" "$id:/usr/bin/$b"
    docker exec "$id" chown root:root "/usr/bin/$b"
    docker exec "$id" chmod 0755 "/usr/bin/$b"
  done
  docker exec "$id" sh -c "printf '%s' '$k8s_version' > /kind/version"
  local required
  required=$(docker exec "$id" kubeadm config images list --kubernetes-version "$k8s_version")
  for want in $required; do
    printf '%s\n' "${images[@]}" | grep -qx "$want" || die "kubeadm $k8s_version asks for $want, which this script does not build"
  done
  docker exec "$id" bash -c 'nohup containerd > /tmp/containerd.log 2>&1 &'
  docker exec "$id" bash -c 'for i in $(seq 1 50); do [ -S /run/containerd/containerd.sock ] && ctr version >/dev/null 2>&1 && exit 0; sleep 0.2; done; cat /tmp/containerd.log; exit 1'
  step "importing ${#images[@]} component images into the node's containerd"
  docker save "${images[@]}" | docker exec -i "$id" ctr --namespace=k8s.io images import \
    --label=io.cri-containerd.pinned=pinned --all-platforms --no-unpack --digests - >/dev/null
  docker exec "$id" ctr --namespace=k8s.io images list -q | sort >&2
  docker exec "$id" pkill containerd
  # The build container's PID 1 is sleep, which reaps nothing: a stopped
  # containerd stays as a zombie, so wait for no live one.
  docker exec "$id" bash -c 'for i in $(seq 1 100); do ps -o stat= -C containerd | grep -qv "^Z" || exit 0; sleep 0.2; done; echo "containerd did not stop" >&2; exit 1'
  docker exec "$id" rm -f /tmp/containerd.log
  docker commit \
    --change 'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]' \
    --change 'ENV HTTP_PROXY="" HTTPS_PROXY="" NO_PROXY=""' \
    "$id" "$node_image" >/dev/null
  docker rm -f -v "$id" >/dev/null
  trap - EXIT
  step "node image $node_image built ($(docker image inspect -f '{{.Size}}' "$node_image" | awk '{printf "%.0f MB", $1/1e6}')) in $(( $(date +%s) - started ))s"
  prune_old
  report "$node_image"
}

# Images of earlier keys (another version or script): removed, except one a
# container still uses (the engine refuses those).
prune_old() {
  local ref
  for repo in cvk-local/kind-node cvk-local/kind-base cvk-local/debian-node cvk-local/runtime; do
    docker image ls --format '{{.Repository}}:{{.Tag}}' "$repo" | while read -r ref; do
      case "$ref" in *"-$key"|*:latest) ;; *) docker image rm "$ref" >/dev/null 2>&1 && step "removed the old image $ref" || true ;; esac
    done
  done
}

# What `cvk-hil cluster kind up` reads: key=value lines on stdout.
report() {
  printf 'node-image=%s\nkind=%s\nkubectl=%s\n' "$1" "$tools_bin/kind" "$k8s_bin/kubectl"
}

case "${1:-node}" in
  node) main ;;
  # The bases of the project's own images (kind/docker/build-images.sh):
  # prints `builder=IMAGE` and `runtime=IMAGE`.
  bases) bases; printf 'builder=%s\nruntime=%s\n' "$node_base" "$runtime" ;;
  *) die "usage: build.sh [node|bases]" ;;
esac
