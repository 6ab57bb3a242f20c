"""``fittingroom presets``: the named training configurations."""

from __future__ import annotations

import argparse
import json

from ..config.train_config import PRESET_NOTES, PRESETS, TrainConfig


def cmd_presets(args: argparse.Namespace) -> int:
    if args.name:
        print(json.dumps(TrainConfig.from_preset(args.name).to_dict(), indent=2))
        return 0
    for name in PRESETS:
        cfg = TrainConfig.from_preset(name)
        print(f"{name:9s} {cfg.model:6s} {cfg.epochs:>3d} epochs  {PRESET_NOTES.get(name, '')}")
    print("\n`fittingroom presets NAME` shows one whole; `fittingroom train --preset NAME` trains it.")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("presets", help="list the named training configurations")
    r.add_argument("name", nargs="?", help="show this preset's whole configuration as JSON")
    r.set_defaults(func=cmd_presets)
