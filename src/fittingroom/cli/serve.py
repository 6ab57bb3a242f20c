"""``fittingroom serve``: the HTTP API and its page, with every limit checked before anything starts."""

from __future__ import annotations

import argparse
import re
import socket

from ..core.errors import ConfigError
from ..core.files import MB
from .predict import add_engine_arguments

# every serve flag's valid range, checked before anything starts (argparse takes "inf" and "nan" as floats)
RANGES = {  # (lowest, highest): ints for integer flags, floats for number flags
    "port": (1, 65535),
    "max_batch": (1, 4096),  # images per forward pass
    "max_wait_ms": (0.0, 1000.0),  # a batch waiting longer only adds latency
    "max_files": (1, 1000),
    "max_mb": (0.001, 1024.0),
    "max_request_mpx": (0.001, 100_000.0),
    "max_requests": (1, 100_000),
    "max_queued_mb": (0.001, 1024.0**2),
    "max_connections": (1, 1_000_000),
    "body_timeout": (0.1, 3600.0),  # seconds
    "header_timeout": (0.1, 3600.0),
}
HOST_NAME = re.compile(r"([A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?")


def _check_flags(args: argparse.Namespace) -> None:
    """A one-line ConfigError for the first serve flag out of its range."""
    import math
    import os

    ranges = {**RANGES, "threads": (1, os.cpu_count() or 1)}  # torch crashes on 100000 threads
    for name, (lo, hi) in ranges.items():
        value = getattr(args, name)
        if value is None and name == "max_queued_mb":
            continue
        ok = isinstance(value, (int, float)) and math.isfinite(value) and lo <= value <= hi
        if not ok:
            what = "an integer" if isinstance(lo, int) else "a number"
            extra = " (this machine's CPUs)" if name == "threads" else ""
            raise ConfigError(f"--{name.replace('_', '-')} must be {what} from {lo:g} to {hi:g}{extra}; received {value}")
    for name in args.allowed_host:
        if not HOST_NAME.fullmatch(name):
            raise ConfigError(f"--allowed-host must be a host name, optionally with :port (e.g. example.com or "
                              f"example.com:8000); received {name!r}")


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from ..serve import Limits, create_app
        from ..serve.headers import allowed_hosts
        from ..serve.server import make_server
    except ImportError as exc:
        raise ConfigError(f"serving needs the serve extras ({exc.name} is missing): pip install 'fittingroom[serve]'") from None
    _check_flags(args)
    file_bytes = int(args.max_mb * MB)  # a request may hold at least one largest file and its form fields
    request_bytes = max(Limits().max_request_bytes, file_bytes + MB)
    if args.max_queued_mb is None:
        queued_bytes = max(Limits().max_queued_bytes, request_bytes)
    elif args.max_queued_mb * MB < request_bytes:
        raise ConfigError(f"--max-queued-mb must be at least {request_bytes / MB:g}, the size of one largest "
                          f"request; received {args.max_queued_mb:g}")
    else:
        queued_bytes = int(args.max_queued_mb * MB)
    max_pixels = Limits().max_pixels
    if args.max_request_mpx * 1e6 < max_pixels:
        raise ConfigError(f"--max-request-mpx must be at least {max_pixels / 1e6:g}, one largest image; "
                          f"received {args.max_request_mpx:g}")
    limits = Limits(max_file_bytes=file_bytes, max_request_bytes=request_bytes, max_files=args.max_files,
                    max_request_pixels=int(args.max_request_mpx * 1e6), max_requests=args.max_requests,
                    max_queued_bytes=queued_bytes, body_timeout=args.body_timeout, header_timeout=args.header_timeout)
    app = create_app(args.run, engine=args.engine, onnx_path=args.onnx, limits=limits, max_batch=args.max_batch,
                     max_wait_ms=args.max_wait_ms, threads=args.threads,
                     allowed_hosts=allowed_hosts(args.host, args.port, args.allowed_host))
    sock = _listen(args.host, args.port)  # bound here, so that a busy port is a one-line error
    server = make_server(app, limits, max_connections=args.max_connections, log_level=args.log_level,
                         access_log=args.access_log)
    print(f"Serving {args.run} ({app.state.predictor.info['model']}, {args.engine}) on http://{args.host}:{args.port}/ "
          f"- API docs at /docs; Ctrl-C stops", flush=True)
    server.run(sockets=[sock])
    return 0


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except (OSError, ValueError, UnicodeError) as exc:  # ValueError, UnicodeError: a malformed --host
        sock.close()
        why = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"cannot listen on {host}:{port} ({why}); choose another --port or --host") from None
    sock.set_inheritable(True)
    return sock


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("serve", help="serve a trained run over HTTP: JSON API, web page, metrics",
                       description="POST /v1/predict (multipart `file` or `files`), GET /v1/model, /healthz, "
                                   "/metrics, /docs, and a page at /.")
    s.add_argument("run", help="run (or model) folder")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    add_engine_arguments(s)
    s.add_argument("--max-batch", type=int, default=64, help="most images per forward pass (default 64)")
    s.add_argument("--max-wait-ms", type=float, default=0.0,
                   help="how long a batch waits for more requests (default 0: batches form while the last one runs)")
    s.add_argument("--max-files", type=int, default=32, help="most images per request (default 32)")
    s.add_argument("--max-mb", type=float, default=10.0, help="largest image file in MB (default 10)")
    s.add_argument("--threads", type=int, default=1,
                   help="CPU threads for the model (default 1: small batches gain nothing from more, and the web "
                        "server needs a core too)")
    s.add_argument("--max-request-mpx", type=float, default=100.0, metavar="MPX",
                   help="most megapixels all images of one request may decode to (default 100, about 2 s of "
                        "preprocessing; 413 beyond)")
    s.add_argument("--max-requests", type=int, default=64,
                   help="most uploads in flight at once (default 64; 503 with Retry-After beyond)")
    s.add_argument("--max-queued-mb", type=float, metavar="MB",
                   help="most MB of uploads held in memory at once (default 256, or one largest request if more; "
                        "503 with Retry-After beyond)")
    s.add_argument("--max-connections", type=int, default=256,
                   help="most open connections or running requests (default 256; 503 beyond)")
    s.add_argument("--body-timeout", type=float, default=60.0, metavar="S",
                   help="seconds a request's body may take to arrive (default 60; 408 beyond)")
    s.add_argument("--header-timeout", type=float, default=10.0, metavar="S",
                   help="seconds a request's headers may take to arrive (default 10; then the connection closes)")
    s.add_argument("--allowed-host", action="append", default=[], metavar="NAME[:PORT]",
                   help="a Host name to answer besides localhost, 127.0.0.1 and [::1] (repeatable; for a proxy "
                        "or a LAN name). Other Host headers get 400, against DNS rebinding")
    s.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"))
    s.add_argument("--access-log", action="store_true", help="log every request")
    s.set_defaults(func=cmd_serve)
