#!/usr/bin/env bash
# Builds the project's images with no registry:
#
#   DOCKER_HOST=... kind/docker/build-images.sh [TAG]     # default TAG: dev
#   CVK_IMAGE_PROFILE=dev ...                            # from debug binaries
#   CVK_IMAGE_BINARIES=DIR ...                           # from DIR, no cargo build
#
# cvk-controller:TAG and iosxe-sim:TAG (the simulator image also runs the
# in-cluster image servers, `iosxe-sim serve-images`). The binaries are built
# on the host (cargo build --release, cached in target/), then each
# Dockerfile of kind/docker runs with local bases made from Debian packages
# (kind/node/build.sh bases) and PREBUILT set, in a build context holding only
# that binary. With registry access, build the Dockerfiles as they are
# (kind/README.md). Prints each image with its size.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
tag="${1:-dev}"
step() { printf '[images %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { printf 'kind/docker/build-images.sh: %s\n' "$*" >&2; exit 1; }

docker version --format '{{.Server.Version}}' >/dev/null 2>&1 \
  || die "no Docker engine answers${DOCKER_HOST:+ at DOCKER_HOST=$DOCKER_HOST}: run kind/host/docker.sh up and export the DOCKER_HOST it prints"

# BuildKit (the Dockerfiles' cache mounts): buildx where the client has it,
# else a client that still speaks BuildKit itself (Debian's docker.io 20.10).
build() {
  if docker buildx version >/dev/null 2>&1; then
    docker buildx build --load "$@"
  elif [ -x /usr/bin/docker ] && DOCKER_BUILDKIT=1 /usr/bin/docker build --help 2>/dev/null | grep -q -- '--secret'; then
    DOCKER_BUILDKIT=1 /usr/bin/docker build "$@"
  else
    die "no BuildKit client: install docker-buildx, or Debian's docker.io (its /usr/bin/docker 20.10 builds with DOCKER_BUILDKIT=1)"
  fi
}

bases=$(bash "$repo/kind/node/build.sh" bases)
builder=$(printf '%s\n' "$bases" | sed -n 's/^builder=//p')
runtime=$(printf '%s\n' "$bases" | sed -n 's/^runtime=//p')
[ -n "$builder" ] && [ -n "$runtime" ] || die "kind/node/build.sh bases printed no bases"

# CVK_IMAGE_PROFILE=dev builds the images from the debug binaries (the
# profile the tests build; dependencies are optimised in it too).
profile="${CVK_IMAGE_PROFILE:-release}"
case "$profile" in
  release) flag=--release; out=release ;;
  dev) flag=; out=debug ;;
  *) die "CVK_IMAGE_PROFILE=$profile: use release or dev" ;;
esac
# CVK_IMAGE_BINARIES=DIR takes the two binaries from DIR as they are (.ci/run
# points it at the test run's target/debug: building them again for these
# two packages alone would compile their dependencies with other features).
bindir="${CVK_IMAGE_BINARIES:-}"
if [ -n "$bindir" ]; then
  for bin in cvk-controller iosxe-sim; do
    [ -x "$bindir/$bin" ] || die "CVK_IMAGE_BINARIES=$bindir has no executable $bin"
  done
  step "binaries from CVK_IMAGE_BINARIES=$bindir"
else
  step "building cvk-controller and iosxe-sim on the host (cargo build ${flag:---profile dev})"
  (cd "$repo" && cargo build $flag --locked -p cvk-controller --bin cvk-controller -p iosxe-sim --bin iosxe-sim)
  bindir="${CARGO_TARGET_DIR:-$repo/target}/$out"
fi

for spec in controller:cvk-controller sim:iosxe-sim; do
  file=${spec%%:*}; bin=${spec#*:}
  ctx=$(mktemp -d)
  # The image carries no debug information (the host build keeps it for
  # backtraces and profiles).
  strip -o "$ctx/$bin" "$bindir/$bin"
  step "building $bin:$tag (kind/docker/$file.Dockerfile, bases $builder and $runtime)"
  build --quiet -f "$here/$file.Dockerfile" -t "$bin:$tag" \
    --build-arg "RUST_IMAGE=$builder" --build-arg "RUNTIME_IMAGE=$runtime" \
    --build-arg "PREBUILT=$bin" "$ctx" >/dev/null
  rm -rf "$ctx"
  user=$(docker image inspect -f '{{.Config.User}}' "$bin:$tag")
  [ "$user" = "65532:65532" ] || die "$bin:$tag runs as '$user', not the non-root 65532:65532"
  size=$(docker image inspect -f '{{.Size}}' "$bin:$tag")
  step "$bin:$tag: $(awk -v s="$size" 'BEGIN{printf "%.1f MB", s/1e6}'), user $user"
done
