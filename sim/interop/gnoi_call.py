#!/usr/bin/env python3
"""gnoi-call: call any gRPC method of a server that serves gRPC reflection,
the way grpcurl does, using the PyPI packages grpc-requests and
grpcio-reflection (the request and response types come from the server's
reflection service, not from compiled stubs).

    gnoi-call [--ca FILE [--cert FILE --key FILE] [--server-name NAME]]
              [-H key:value]... [--timeout SECONDS]
              HOST:PORT SERVICE/METHOD [JSON ...]
    gnoi-call ... HOST:PORT list

Without --ca the channel is plaintext. Each JSON argument is one request
message (protobuf JSON mapping; bytes as base64); `-` reads one JSON message
per line from standard input. A unary request defaults to `{}`. Every
response is printed as one JSON line (proto field names). A gRPC error is
printed to standard error as `ERROR <CODE>: <details>` and the exit code is 3.
"""

import argparse
import collections
import json
import sys

import grpc
from grpc_requests import Client


class _Details(
    collections.namedtuple(
        "_Details",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    pass


class Metadata(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds fixed metadata to every call, reflection included (grpcurl -H)."""

    def __init__(self, pairs):
        self.pairs = pairs

    def _d(self, d):
        md = list(d.metadata or []) + self.pairs
        return _Details(d.method, d.timeout, md, d.credentials, d.wait_for_ready, d.compression)

    def intercept_unary_unary(self, cont, d, req):
        return cont(self._d(d), req)

    def intercept_unary_stream(self, cont, d, req):
        return cont(self._d(d), req)

    def intercept_stream_unary(self, cont, d, reqs):
        return cont(self._d(d), reqs)

    def intercept_stream_stream(self, cont, d, reqs):
        return cont(self._d(d), reqs)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="gnoi-call", description=__doc__.split("\n\n")[0])
    p.add_argument("target", help="HOST:PORT")
    p.add_argument("method", help="SERVICE/METHOD (a leading / is allowed) or `list`")
    p.add_argument("requests", nargs="*", help="request messages as JSON; - reads stdin")
    p.add_argument("--ca", help="PEM CA certificate; enables TLS")
    p.add_argument("--cert", help="PEM client certificate (mTLS)")
    p.add_argument("--key", help="PEM client key (mTLS)")
    p.add_argument("--server-name", help="TLS server name to verify instead of HOST")
    p.add_argument("-H", "--header", action="append", default=[], help="metadata key:value")
    p.add_argument("--timeout", type=float, default=30.0, help="deadline of the call, seconds")
    a = p.parse_intermixed_args(argv)
    if (a.cert is None) != (a.key is None):
        p.error("--cert and --key go together")
    if (a.cert or a.server_name) and not a.ca:
        p.error("--cert, --key and --server-name need --ca")
    return a


def read_requests(args):
    out = []
    for r in args.requests:
        if r == "-":
            out.extend(json.loads(line) for line in sys.stdin if line.strip())
        else:
            out.append(json.loads(r))
    return out


def main(argv):
    a = parse_args(argv)
    pairs = []
    for h in a.header:
        k, sep, v = h.partition(":")
        if not sep:
            print(f"gnoi-call: header {h!r} is not key:value", file=sys.stderr)
            return 2
        pairs.append((k.strip().lower(), v.strip()))
    # Lazy, and no check against the listed services: like grpcurl, a method
    # of a service the server does not list is still resolved by symbol and
    # called, so the server's own answer (UNIMPLEMENTED) is what one sees.
    kwargs = {
        "interceptors": [Metadata(pairs)],
        "lazy": True,
        "skip_check_method_available": True,
    }
    if a.ca:
        creds = {"root_certificates": a.ca}
        if a.cert:
            creds["certificate_chain"] = a.cert
            creds["private_key"] = a.key
        kwargs["ssl"] = True
        kwargs["credentials"] = creds
        if a.server_name:
            kwargs["channel_options"] = [("grpc.ssl_target_name_override", a.server_name)]
    try:
        client = Client(a.target, **kwargs)
        if a.method == "list":
            for s in sorted(client.service_names):
                print(s)
            return 0
        service, _, method = a.method.strip("/").rpartition("/")
        if not service or not method:
            print(f"gnoi-call: method {a.method!r} is not SERVICE/METHOD", file=sys.stderr)
            return 2
        client.register_service(service)
        methods = client._service_methods_meta.get(service, {})
        if method not in methods:
            print(f"gnoi-call: {service}/{method} is not in the server's descriptors", file=sys.stderr)
            return 2
        meta = methods[method]
        reqs = read_requests(a)
        if meta.method_type.is_unary_request:
            if len(reqs) > 1:
                print(f"gnoi-call: {a.method} takes one request, got {len(reqs)}", file=sys.stderr)
                return 2
            payload = reqs[0] if reqs else {}
        else:
            payload = iter(reqs)
        result = client.request(service, method, payload, timeout=a.timeout)
        if meta.method_type.is_unary_response:
            result = [result]
        for r in result:
            print(json.dumps(r, sort_keys=True), flush=True)
        return 0
    except grpc.RpcError as e:
        code = e.code().name if e.code() is not None else "UNKNOWN"
        print(f"ERROR {code}: {e.details()}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
