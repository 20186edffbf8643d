#!/usr/bin/env bash
# Installs the Helm engine the chart tests use: Helm's Go library as a
# shared object, shipped inside the `helm-sdkpy` wheel on PyPI (Debian has
# no helm package, and no other registry here ships a helm binary). Only
# the .so is kept, in ~/.cache/cvk/helm-sdkpy-<version>/; kind/chart/tools/helm.py
# drives it with ctypes, so neither the wheel's Python code nor its
# Python-version floor matter. Idempotent: does nothing when present.
set -euo pipefail
version="${HELM_SDKPY_VERSION:-0.1.32}"
dest="${CVK_CACHE_DIR:-$HOME/.cache/cvk}/helm-sdkpy-$version"
lib="$dest/libhelm_sdkpy.so"
if [ -s "$lib" ]; then
  echo "helm engine: $lib (cached)"
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: \
  --python-version 3.12 --dest "$tmp" "helm-sdkpy==$version"
python3 - "$tmp" "$dest" <<'PY'
import glob, os, sys, zipfile
tmp, dest = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(tmp, "helm_sdkpy-*.whl"))[0]
os.makedirs(dest, exist_ok=True)
with zipfile.ZipFile(wheel) as z:
    member = "helm_sdkpy/_lib/linux-amd64/libhelm_sdkpy.so"
    with z.open(member) as src, open(os.path.join(dest, "libhelm_sdkpy.so.part"), "wb") as out:
        while chunk := src.read(1 << 20):
            out.write(chunk)
    for name in z.namelist():
        if name.endswith("LICENSE"):
            with z.open(name) as src, open(os.path.join(dest, "LICENSE"), "wb") as out:
                out.write(src.read())
os.replace(os.path.join(dest, "libhelm_sdkpy.so.part"), os.path.join(dest, "libhelm_sdkpy.so"))
PY
echo "helm engine: $lib"
