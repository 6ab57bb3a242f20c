"""``fittingroom tune``: hyperparameter search."""

from __future__ import annotations

import argparse
import json

from .train import add_config_arguments, config_from_args


def cmd_tune(args: argparse.Namespace) -> int:
    from ..tuning.space import resolve_space, space_to_dict
    from ..tuning.study import tune

    config = config_from_args(args)
    space = resolve_space(args.space, config)
    if args.show_space:
        print(json.dumps(space_to_dict(space), indent=2))
        return 0
    tune(config, out=args.out, space=space, trials=args.trials, timeout=args.timeout, storage=args.storage,
         verbose=not args.quiet)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="search hyperparameters (Optuna: TPE, median pruning)",
                       description="Search hyperparameters around a configuration. Every trial is a run folder in "
                                   "STUDY/trials/; the best configuration is written to STUDY/best_config.json. "
                                   "Run the same command again to continue an interrupted study.")
    add_config_arguments(p)
    p.add_argument("--space", metavar="NAME|FILE",
                   help="a preset's named space or a .json/.toml space file (default: the named space of --preset)")
    p.add_argument("--show-space", action="store_true", help="print the search space as JSON and exit")
    p.add_argument("--trials", type=int, default=20,
                   help="complete plus pruned trials the study should hold when done (default 20)")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="start no new trial after this many seconds")
    p.add_argument("--storage", metavar="FILE|URL",
                   help="the study's SQLite file or database URL (default STUDY/study.db); share it between processes")
    p.add_argument("--out", metavar="STUDY", help="the study folder (default: runs/tune-<preset>)")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=cmd_tune)
