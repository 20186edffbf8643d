#!/usr/bin/env python3
"""Drives Helm's Go library (libhelm_sdkpy.so, see install-helm-sdk.sh)
through ctypes, for the chart tests.

  helm.py install --lib SO --kubeconfig FILE --namespace NS --release NAME \
      --chart DIR [--values JSON]      # prints the release JSON (with "manifest")
  helm.py upgrade --lib SO --kubeconfig FILE --namespace NS --release NAME \
      --chart DIR [--values JSON] [--wait SECONDS]
                                       # `helm upgrade --install`: installs the
                                       # release or upgrades it in place
  helm.py uninstall --lib SO --kubeconfig FILE --namespace NS --release NAME
  helm.py lint --lib SO --chart DIR    # prints the lint result JSON

Exit status 0 on success; on failure Helm's error text goes to stderr and
the status is 1.
"""
import argparse
import ctypes
import json
import sys


def load(path):
    lib = ctypes.CDLL(path)
    handle_t = ctypes.c_ulonglong
    lib.helm_sdkpy_config_create.argtypes = [
        ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
        ctypes.POINTER(handle_t)]
    lib.helm_sdkpy_config_create.restype = ctypes.c_int
    lib.helm_sdkpy_config_destroy.argtypes = [handle_t]
    lib.helm_sdkpy_install.argtypes = [
        handle_t, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
        ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
    lib.helm_sdkpy_install.restype = ctypes.c_int
    lib.helm_sdkpy_upgrade.argtypes = [
        handle_t, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
        ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
    lib.helm_sdkpy_upgrade.restype = ctypes.c_int
    lib.helm_sdkpy_uninstall.argtypes = [
        handle_t, ctypes.c_char_p, ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_void_p)]
    lib.helm_sdkpy_uninstall.restype = ctypes.c_int
    lib.helm_sdkpy_lint.argtypes = [handle_t, ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
    lib.helm_sdkpy_lint.restype = ctypes.c_int
    lib.helm_sdkpy_last_error.restype = ctypes.c_char_p
    lib.helm_sdkpy_free.argtypes = [ctypes.c_void_p]
    return lib, handle_t


def config(lib, handle_t, namespace, kubeconfig):
    h = handle_t()
    rc = lib.helm_sdkpy_config_create(
        namespace.encode(), kubeconfig.encode() if kubeconfig else None, None,
        b"{}", ctypes.byref(h))
    if rc != 0:
        fail(lib, "configuration")
    return h


def take(lib, ptr):
    if not ptr.value:
        return ""
    try:
        return ctypes.string_at(ptr.value).decode()
    finally:
        lib.helm_sdkpy_free(ptr)


def fail(lib, what):
    err = lib.helm_sdkpy_last_error()
    sys.stderr.write(f"helm {what} failed: {(err or b'unknown error').decode()}\n")
    sys.exit(1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=["install", "upgrade", "uninstall", "lint"])
    p.add_argument("--lib", required=True)
    p.add_argument("--chart", default="", help="the chart directory (all but uninstall)")
    p.add_argument("--kubeconfig")
    p.add_argument("--namespace", default="default")
    p.add_argument("--release", default="cvk")
    p.add_argument("--values", default="")
    p.add_argument("--wait", type=int, default=0,
                   help="upgrade: wait this many seconds for the release's workloads (0: no wait)")
    a = p.parse_args()
    if a.command != "uninstall" and not a.chart:
        p.error(f"{a.command} needs --chart DIR")
    lib, handle_t = load(a.lib)
    h = config(lib, handle_t, a.namespace, a.kubeconfig)
    out = ctypes.c_void_p()
    if a.command == "install":
        if a.values:
            json.loads(a.values)  # refuse bad JSON here, with Python's message
        options = {"create_namespace": False, "wait": False, "timeout_seconds": 60,
                   "server_side_apply": "false", "disable_openapi_validation": False}
        rc = lib.helm_sdkpy_install(h, a.release.encode(), a.chart.encode(),
                                    a.values.encode(), b"", json.dumps(options).encode(),
                                    ctypes.byref(out))
    elif a.command == "upgrade":
        if a.values:
            json.loads(a.values)
        options = {"install": True, "create_namespace": False, "wait": a.wait > 0,
                   "timeout_seconds": a.wait or 60, "server_side_apply": "false",
                   "disable_openapi_validation": False, "reset_values": True}
        rc = lib.helm_sdkpy_upgrade(h, a.release.encode(), a.chart.encode(),
                                    a.values.encode(), b"", json.dumps(options).encode(),
                                    ctypes.byref(out))
    elif a.command == "uninstall":
        rc = lib.helm_sdkpy_uninstall(h, a.release.encode(), 1, 120, ctypes.byref(out))
    else:
        rc = lib.helm_sdkpy_lint(h, a.chart.encode(), ctypes.byref(out))
    if rc != 0:
        fail(lib, a.command)
    sys.stdout.write(take(lib, out))
    lib.helm_sdkpy_config_destroy(h)


if __name__ == "__main__":
    main()
