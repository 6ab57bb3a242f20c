"""``fittingroom summary``: a registered model's Keras-format summary, or the list of models."""

from __future__ import annotations

import argparse

from .train import add_model_arg_flag, parse_assignment


def cmd_summary(args: argparse.Namespace) -> int:
    from ..config.train_config import build_model_checked
    from ..models.registry import list_models
    from ..models.summary import model_summary

    if args.list:
        print("\n".join(list_models()))
        return 0
    kwargs = dict(parse_assignment(t, "--model-arg") for t in args.model_arg)
    model = build_model_checked(args.model, kwargs)
    shape = tuple(kwargs.get("input_shape", (28, 28)))
    print(model_summary(model, shape, name=args.model))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("summary", help="print a model's Keras-format summary")
    s.add_argument("--model", default="mlp", help="model name (default: mlp, the tutorial's)")
    add_model_arg_flag(s)
    s.add_argument("--list", action="store_true", help="list the registered models")
    s.set_defaults(func=cmd_summary)
