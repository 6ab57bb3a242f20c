"""``fittingroom serve`` (the HTTP API and its page) and ``fittingroom export`` (ONNX)."""

from __future__ import annotations

import argparse
import socket

from ..errors import ConfigError
from .predict import add_engine_arguments

MB = 2**20


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ..serve import Limits, create_app
    except ImportError as exc:
        raise ConfigError(f"serving needs the serve extras ({exc.name} is missing): pip install 'fittingroom[serve]'") from None
    for name in ("port", "max_batch", "max_files", "max_mb", "threads"):
        value = getattr(args, name)
        if value is None or value <= 0 or (name == "port" and value > 65535):
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive number (a port: 1-65535); received {value}")
    file_bytes = int(args.max_mb * MB)  # a request may hold at least one largest file and its form fields
    limits = Limits(max_file_bytes=file_bytes, max_request_bytes=max(Limits().max_request_bytes, file_bytes + MB),
                    max_files=args.max_files)
    app = create_app(args.run, engine=args.engine, onnx_path=args.onnx, limits=limits, max_batch=args.max_batch,
                     max_wait_ms=args.max_wait_ms, threads=args.threads)
    sock = _listen(args.host, args.port)  # bound here, so that a busy port is a one-line error
    config = uvicorn.Config(app, log_level=args.log_level, access_log=args.access_log, http="httptools",
                            loop="uvloop" if _has("uvloop") else "asyncio", server_header=False)
    print(f"Serving {args.run} ({app.state.predictor.info['model']}, {args.engine}) on http://{args.host}:{args.port}/ "
          f"- API docs at /docs; Ctrl-C stops", flush=True)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port or --host") from None
    sock.set_inheritable(True)
    return sock


def cmd_export(args: argparse.Namespace) -> int:
    from ..export import export_onnx

    if args.format != "onnx":
        raise ConfigError(f"unknown export format {args.format!r}; valid formats: onnx")
    if args.check < 1:
        raise ConfigError(f"--check must be a positive number of test images; received {args.check}")
    result = export_onnx(args.run, args.out, args.data_dir, n_check=args.check, opset=args.opset)
    print(f"Exported {result.path} ({result.size_bytes / MB:.1f} MB) in {result.seconds:.1f} s; onnxruntime matches "
          f"PyTorch within {result.max_abs_diff:.1e} on {result.checked} test images")
    return 0


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
    s.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"))
    s.add_argument("--access-log", action="store_true", help="log every request")
    s.set_defaults(func=cmd_serve)

    e = sub.add_parser("export", help="export a trained run to ONNX (checked against PyTorch)")
    e.add_argument("run", help="run (or model) folder")
    e.add_argument("--format", default="onnx", help="onnx (the only one)")
    e.add_argument("--out", help="file to write (default RUN/model.onnx, where --engine onnx looks)")
    e.add_argument("--check", type=int, default=1000, metavar="N", help="test images to compare on (default 1000)")
    e.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    e.add_argument("--data-dir", help="where the run's dataset is (for the test images)")
    e.set_defaults(func=cmd_export)
