#!/usr/bin/env bash
# Installs the standard gNMI/gNOI client tools that sim/tests/interop.rs
# drives against the simulator, on a fresh Debian machine. Idempotent: a
# second run checks the venvs and returns at once.
#
#   pygnmicli      (PyPI pygnmi)         gNMI Capabilities / Get / Subscribe
#   cisco-gnmi     (PyPI cisco-gnmi)     Cisco's gNMI client, IOS XE wrapper
#   netmiko        (PyPI netmiko)        SSH CLI library, cisco_xe driver,
#                  run by netmiko_show.py (this folder)
#   ssh            (Debian openssh-client) exec and interactive (PTY) CLI
#   gnoi_call.py   (this folder) on PyPI grpc-requests + grpcio-reflection:
#                  a reflection-driven gRPC client for gNOI, as grpcurl would
#                  be (Debian 12 packages neither grpcurl nor gnmic)
#
# Where: $CVK_INTEROP_DIR, default ~/.cache/cvk/interop (the tests look there
# too). Needs python3 with venv and pip; installs Debian's python3-venv (with
# sudo when not root) if that is missing.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
dir="${CVK_INTEROP_DIR:-$HOME/.cache/cvk/interop}"
mkdir -p "$dir"

say() { printf 'interop tools: %s\n' "$*"; }

python_ok() {
  command -v "$1" >/dev/null 2>&1 &&
    "$1" -c 'import sys, venv, ensurepip; sys.exit(0 if sys.version_info >= (3, 9) else 1)' 2>/dev/null
}

pick_python() {
  for p in "${CVK_INTEROP_PYTHON:-}" python3 /usr/bin/python3; do
    [ -n "$p" ] && python_ok "$p" && { command -v "$p"; return 0; }
  done
  return 1
}

if ! py="$(pick_python)"; then
  say "no python3 with venv and ensurepip; installing Debian's python3-venv"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    python3 python3-venv python3-pip
  py="$(pick_python)" || { say "python3 -m venv still does not work" >&2; exit 1; }
fi
say "python: $py ($("$py" --version 2>&1))"

# venv NAME REQUIREMENTS IMPORT-CHECK
venv() {
  local name="$1" req="$here/$2" check="$3"
  local v="$dir/$name" stamp sum
  sum="$(sha256sum "$req" | cut -d' ' -f1)"
  stamp="$v/.cvk-requirements.sha256"
  if [ -x "$v/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$sum" ] &&
    "$v/bin/python" -c "$check" >/dev/null 2>&1; then
    say "$name: up to date ($v)"
    return 0
  fi
  say "$name: creating $v"
  rm -rf "$v"
  "$py" -m venv "$v"
  "$v/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$req"
  "$v/bin/python" -c "$check"
  echo "$sum" >"$stamp"
  say "$name: installed"
}

venv gnmi requirements-gnmi.txt 'import pygnmi, grpc_requests, grpc_reflection, grpc'
venv cisco-gnmi requirements-cisco-gnmi.txt 'import cisco_gnmi.cli'
venv netmiko requirements-netmiko.txt 'import netmiko'
install -m 0755 "$here/netmiko_show.py" "$dir/netmiko/bin/netmiko_show.py"
cat >"$dir/netmiko/bin/cvk-netmiko-show" <<EOF
#!/bin/sh
exec "$dir/netmiko/bin/python" "$dir/netmiko/bin/netmiko_show.py" "\$@"
EOF
chmod 0755 "$dir/netmiko/bin/cvk-netmiko-show"

# OpenSSH's client for the CLI interop test (exec and PTY).
if ! command -v ssh >/dev/null 2>&1; then
  say "installing Debian's openssh-client"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    openssh-client
fi

install -m 0755 "$here/gnoi_call.py" "$dir/gnmi/bin/gnoi_call.py"
# Run through the venv's python whatever the shebang of the copy says.
cat >"$dir/gnmi/bin/gnoi-call" <<EOF
#!/bin/sh
exec "$dir/gnmi/bin/python" "$dir/gnmi/bin/gnoi_call.py" "\$@"
EOF
chmod 0755 "$dir/gnmi/bin/gnoi-call"

say "pygnmicli:  $dir/gnmi/bin/pygnmicli"
say "gnoi-call:  $dir/gnmi/bin/gnoi-call"
say "cisco-gnmi: $dir/cisco-gnmi/bin/cisco-gnmi"
say "netmiko:    $dir/netmiko/bin/cvk-netmiko-show"
say "ssh:        $(command -v ssh)"
