"""``fittingroom train``, and the flags that build a TrainConfig (shared with ``fittingroom tune``)."""

from __future__ import annotations

import argparse
import json

from ..config.train_config import PRESETS, TrainConfig
from ..core.errors import ConfigError

# Flags that map one-to-one onto TrainConfig fields: flag -> (field, type, help).
CONFIG_FLAGS = {
    "--model": ("model", str, "model name from the registry (see `fittingroom summary --list`)"),
    "--data": ("data", str, "dataset name (fashion-mnist, mnist, cifar10), a folder of IDX files, a folder with "
                       "one sub-folder of images per class (or train/, val/, test/ sub-folders of those), or a CSV "
                       "(label,pixel1,...)"),
    "--data-dir": ("data_dir", str, "the only folder to look in for the dataset's files (default: the usual places, then download)"),
    "--epochs": ("epochs", int, "number of epochs"),
    "--batch-size": ("batch_size", int, "images per optimizer step (global, across processes)"),
    "--lr": ("lr", float, "(peak) learning rate"),
    "--optimizer": ("optimizer", str, "sgd, adam or adamw"),
    "--schedule": ("schedule", str, "constant, step, cosine or onecycle"),
    "--seed": ("seed", int, "random seed for initialisation, shuffling and augmentation"),
    "--device": ("device", str, "auto, cpu or cuda"),
    "--precision": ("precision", str, "auto, fp32 or bf16"),
    "--threads": ("threads", int, "CPU threads for PyTorch"),
    "--image-size": ("image_size", int, "an image folder: the height and width its images become "
                                        "(default: their median, at most 64 px)"),
    "--preprocessing": ("preprocessing", str, "an image folder: resize (keep the aspect ratio, centre-crop; the "
                                              "default), resize-pad (fit inside, pad with black) or object (grey, "
                                              "cropped to the object: photos like Fashion-MNIST's)"),
}
FLAG_VALUES = {"--image-size": ("H", "W")}  # flags that take more than one value: their metavars


# Switches that turn a TrainConfig field on: flag -> (field, help).
SWITCHES = {
    "--deterministic": ("deterministic", "bit-for-bit repeatable on CPU (same seed, same weights)"),
    "--tensorboard": ("tensorboard", "write TensorBoard event files into the run folder (`tensorboard --logdir runs`)"),
    "--mlflow": ("mlflow", "log the run to MLflow (needs the mlflow package; MLFLOW_TRACKING_URI, else MLflow's local default)"),
}


def parse_assignment(text: str, what: str) -> tuple[str, object]:
    """``key=value`` with a JSON value (bare words are strings)."""
    if "=" not in text:
        raise ConfigError(f"{what} expects KEY=VALUE; received {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip().replace("-", "_"), value


def add_model_arg_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="an argument of the model, e.g. hidden=[512,256] or dropout=0.2 (repeatable)")


def config_from_args(args: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
    """The preset (or --config file, or ``base``), then --set assignments, then the dedicated flags."""
    if args.config and args.preset:
        raise ConfigError(f"--config {args.config} and --preset {args.preset} both name the configuration to start "
                          f"from; pass one (a --config file names its own preset)")
    if base is not None:
        config = base
    else:
        config = TrainConfig.load(args.config) if args.config else TrainConfig.from_preset(args.preset or "seed")
    values = config.to_dict()
    given: dict[str, tuple[str, object]] = {}  # setting -> (where the command line gave it, value)

    def assign(key: str, value: object, source: str) -> None:
        # One setting given twice with two values (--set epochs=5 --epochs 3) is ambiguous: refuse, do not pick one.
        # A boolean is another value than the number Python counts it equal to (--set epochs=true --epochs 1).
        if key in given and (given[key][1] != value or isinstance(given[key][1], bool) != isinstance(value, bool)):
            raise ConfigError(f"`{key}` is given twice with different values ({given[key][0]} and {source}); "
                              f"give it once")
        given[key] = (source, value)

    for text in args.set:
        key, value = parse_assignment(text, "--set")
        assign(key, value, f"--set {text}")
        values[key] = value
    for flag, (field, _type, _help) in CONFIG_FLAGS.items():
        value = getattr(args, field)
        if value is not None:
            assign(field, value, f"{flag} {value}")
            values[field] = value
    if args.model is not None and args.model != config.model:
        values["model_args"] = {}  # another model's arguments do not carry over
    for text in args.model_arg:
        key, value = parse_assignment(text, "--model-arg")
        assign(f"model_args.{key}", value, f"--model-arg {text}")
        values["model_args"] = {**values["model_args"], key: value}
    for field, _help in SWITCHES.values():
        if getattr(args, field, False):
            values[field] = True
    return TrainConfig.from_dict(values, where="command line").validate()


def changes_asked(args: argparse.Namespace) -> bool:
    """Whether the command line sets any configuration field (a flag, --set, --model-arg or a switch)."""
    return (any(getattr(args, field) is not None for field, _type, _help in CONFIG_FLAGS.values())
            or bool(args.set or args.model_arg) or any(getattr(args, f, False) for f, _help in SWITCHES.values()))


def cmd_train(args: argparse.Namespace) -> int:
    from ..training.run import read_run_config, train_run

    if args.resume:
        given = [flag for flag, value in (("--out", args.out), ("--config", args.config), ("--preset", args.preset))
                 if value]
        if given:
            raise ConfigError(f"--resume continues {args.resume} in its own folder with its own config.json; drop "
                              f"{', '.join(given)} (or start a new run without --resume)")
        # Flags are changes to the saved configuration; train_run applies the ones a resumed run allows.
        config = config_from_args(args, read_run_config(args.resume)) if changes_asked(args) else None
        train_run(config, resume=args.resume, verbose=not args.quiet)
    else:
        train_run(config_from_args(args), out=args.out, verbose=not args.quiet)
    return 0


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    """The flags that build a TrainConfig (read by :func:`config_from_args`)."""
    p.add_argument("--preset", help=f"named configuration: {', '.join(PRESETS)} (default: seed, the tutorial)")
    p.add_argument("--config", metavar="FILE", help="a JSON configuration file (a run's config.json or a preset file)")
    for flag, (field, type_, help_) in CONFIG_FLAGS.items():
        many = FLAG_VALUES.get(flag)
        p.add_argument(flag, dest=field, type=type_, help=help_, nargs=len(many) if many else None, metavar=many)
    add_model_arg_flag(p)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any configuration field, e.g. label_smoothing=0.1 or translate=2 (repeatable)")
    for flag, (field, help_) in SWITCHES.items():
        p.add_argument(flag, dest=field, action="store_true", help=help_)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model and save the run folder",
                       description="Train a model, evaluate it on the test set and save everything in a run folder.")
    add_config_arguments(p)
    p.add_argument("--out", metavar="DIR", help="run folder to create (default: runs/<timestamp>-<preset>)")
    p.add_argument("--resume", metavar="RUN",
                   help="continue an interrupted run from its last complete epoch; with --epochs N, train a run "
                        "(finished or not) up to N epochs; other settings cannot change")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=cmd_train)
