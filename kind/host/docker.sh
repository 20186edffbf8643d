#!/usr/bin/env bash
# A Docker engine for the kind cluster.
#
#   kind/host/docker.sh up     # prints the DOCKER_HOST to use on its last line
#   kind/host/docker.sh down   # stops the engine `up` started, if it started one
#   kind/host/docker.sh check  # says whether the engine can run kind's nodes
#
# If a Docker engine already answers (DOCKER_HOST or the default socket) it is
# used as it is, after checking that it can run privileged containers: kind's
# nodes are privileged, and on hosts whose capability bounding set lacks
# CAP_SYS_RESOURCE Docker's stock runc refuses them ("unable to apply caps"),
# so such an engine must have kind/host/runc-drop-sys-resource as its default
# runtime (the error says how). Otherwise, as root with Debian's docker.io
# installed, `up` starts a private dockerd for the project: its own socket
# (/run/cvk-docker/docker.sock), its own bridge (cvk-docker0, 172.29.0.1/24)
# and no iptables rules, with its images under the cache
# (${CVK_CACHE_DIR:-~/.cache/cvk}/docker), so a second `up` reuses them; `down`
# stops it and removes the bridge, leaving the host as it was.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${CVK_CACHE_DIR:-$HOME/.cache/cvk}"
run_dir=/run/cvk-docker
sock="unix://$run_dir/docker.sock"
bridge=cvk-docker0
bridge_cidr=172.29.0.1/24

say() { printf '[docker] %s\n' "$*" >&2; }
die() { printf 'docker.sh: %s\n' "$*" >&2; exit 1; }

lacks_sys_resource() { # CAP_SYS_RESOURCE is bit 24 of the bounding set
  local bnd; bnd=$(awk '/^CapBnd:/{print $2}' /proc/self/status)
  (( (16#$bnd >> 24 & 1) == 0 ))
}

engine_answers() { docker ${1:+-H "$1"} version --format '{{.Server.Version}}' >/dev/null 2>&1; }

engine_fit() { # host: the engine can run kind's privileged nodes
  lacks_sys_resource || return 0
  local rt; rt=$(docker ${1:+-H "$1"} info --format '{{.DefaultRuntime}}' 2>/dev/null || true)
  local path; path=$(docker ${1:+-H "$1"} info --format "{{(index .Runtimes \"$rt\").Path}}" 2>/dev/null || true)
  case "$path" in *runc-drop-sys-resource*) return 0 ;; esac
  return 1
}

unfit_message() {
  cat >&2 <<MSG
docker.sh: the Docker engine at ${1:-the default socket} cannot run kind's privileged nodes on this host:
  this host's capability bounding set lacks CAP_SYS_RESOURCE, and the engine's default runtime is
  Docker's runc, which asks for every capability ("unable to apply caps: operation not permitted").
  Register the wrapper as the default runtime in /etc/docker/daemon.json and reload dockerd (SIGHUP):
    { "runtimes": { "cvk-runc": { "path": "$here/runc-drop-sys-resource" } },
      "default-runtime": "cvk-runc" }
  or unset DOCKER_HOST and stop that engine, and this script starts a private one as root.
MSG
}

up() {
  if [ -n "${DOCKER_HOST:-}" ] && [ "$DOCKER_HOST" != "$sock" ]; then
    engine_answers "$DOCKER_HOST" || die "DOCKER_HOST=$DOCKER_HOST does not answer (docker version failed)"
    engine_fit "$DOCKER_HOST" || { unfit_message "$DOCKER_HOST"; exit 1; }
    say "using the engine at DOCKER_HOST=$DOCKER_HOST"; echo "$DOCKER_HOST"; return
  fi
  if engine_answers "$sock"; then
    say "private engine already running ($sock)"; echo "$sock"; return
  fi
  if engine_answers ""; then
    if engine_fit ""; then
      say "using the engine on the default socket"; echo "${DOCKER_HOST:-unix:///var/run/docker.sock}"; return
    fi
    unfit_message "the default socket"; exit 1
  fi
  [ "$(id -u)" = 0 ] || die "no Docker engine answers and this is not root: start Docker (or set DOCKER_HOST) and run again"
  command -v dockerd >/dev/null || die "no Docker engine answers and dockerd is not installed: apt-get install docker.io (or start your Docker) and run again"
  command -v docker >/dev/null || die "the docker client is not installed: apt-get install docker.io"
  command -v jq >/dev/null || die "jq is not installed (the runtime wrapper needs it): apt-get install jq"
  [ -e /proc/sys/net/bridge ] || modprobe br_netfilter 2>/dev/null || true
  mkdir -p "$run_dir" "$cache/docker"
  if ! ip link show "$bridge" >/dev/null 2>&1; then
    ip link add "$bridge" type bridge
    ip addr add "$bridge_cidr" dev "$bridge"
  fi
  ip link set "$bridge" up
  local args=(--host "$sock" --data-root "$cache/docker" --exec-root "$run_dir/exec"
    --pidfile "$run_dir/dockerd.pid" --bridge "$bridge" --iptables=false --ip-masq=false
    --containerd-namespace cvk --containerd-plugins-namespace cvk-plugins)
  if lacks_sys_resource; then
    args+=(--add-runtime "cvk-runc=$here/runc-drop-sys-resource" --default-runtime cvk-runc)
    say "this host lacks CAP_SYS_RESOURCE: privileged containers run through $here/runc-drop-sys-resource"
  fi
  say "starting a private dockerd ($sock, data under $cache/docker, log $run_dir/dockerd.log)"
  setsid dockerd "${args[@]}" >"$run_dir/dockerd.log" 2>&1 < /dev/null &
  local i
  for i in $(seq 1 60); do
    engine_answers "$sock" && { say "dockerd is up"; echo "$sock"; return; }
    kill -0 $! 2>/dev/null || { tail -20 "$run_dir/dockerd.log" >&2; die "dockerd exited at start (log above)"; }
    sleep 0.5
  done
  tail -20 "$run_dir/dockerd.log" >&2
  die "dockerd did not answer within 30 s (log above)"
}

down() {
  if [ -f "$run_dir/dockerd.pid" ]; then
    local pid; pid=$(cat "$run_dir/dockerd.pid")
    if kill -0 "$pid" 2>/dev/null; then
      say "stopping the private dockerd (pid $pid)"
      kill "$pid"
      local i
      for i in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      kill -0 "$pid" 2>/dev/null && { say "dockerd did not stop in 30 s; killing it"; kill -9 "$pid"; }
    fi
  fi
  if ip link show "$bridge" >/dev/null 2>&1; then
    ip link delete "$bridge"
    say "removed the bridge $bridge"
  fi
  # dockerd unmounts its own; anything left under the run directory is ours.
  awk -v d="$run_dir" '$5 ~ "^"d {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" || true; done
  rm -rf "$run_dir"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  check)
    if engine_answers "${DOCKER_HOST:-}"; then
      engine_fit "${DOCKER_HOST:-}" && { echo "the engine can run kind's nodes"; exit 0; }
      unfit_message "${DOCKER_HOST:-}"; exit 1
    fi
    die "no Docker engine answers" ;;
  *) die "usage: docker.sh up|down|check" ;;
esac
