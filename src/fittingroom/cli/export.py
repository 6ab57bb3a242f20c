"""``fittingroom export``: a trained run as an ONNX file, checked against PyTorch before it is written."""

from __future__ import annotations

import argparse

from ..core.errors import ConfigError
from ..core.files import MB


def cmd_export(args: argparse.Namespace) -> int:
    from ..inference.export import export_onnx

    if args.format != "onnx":
        raise ConfigError(f"unknown export format {args.format!r}; valid formats: onnx")
    result = export_onnx(args.run, args.out, args.data_dir, n_check=args.check, opset=args.opset, force=args.force)
    print(f"Exported {result.path} ({result.size_bytes / MB:.1f} MB) in {result.seconds:.1f} s; onnxruntime matches "
          f"PyTorch within {result.max_abs_diff:.1e} on {result.checked} test images")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("export", help="export a trained run to ONNX (checked against PyTorch)")
    e.add_argument("run", help="run (or model) folder")
    e.add_argument("--format", default="onnx", help="onnx (the only one)")
    e.add_argument("--out", help="file to write (default RUN/model.onnx, where --engine onnx looks; replaced by "
                                 "each export)")
    e.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    e.add_argument("--check", type=int, default=1000, metavar="N", help="test images to compare on (default 1000)")
    e.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    e.add_argument("--data-dir", help="where the run's dataset is (for the test images)")
    e.set_defaults(func=cmd_export)
