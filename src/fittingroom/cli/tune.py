"""``fittingroom tune``: hyperparameter search, and ``fittingroom runs``: the run folders and their figures."""

from __future__ import annotations

import argparse
import json

from .train import add_config_arguments, config_from_args


def cmd_tune(args: argparse.Namespace) -> int:
    from ..search_space import resolve_space, space_to_dict
    from ..tune import tune

    config = config_from_args(args)
    space = resolve_space(args.space, config)
    if args.show_space:
        print(json.dumps(space_to_dict(space), indent=2))
        return 0
    tune(config, out=args.out, space=space, trials=args.trials, timeout=args.timeout, storage=args.storage,
         verbose=not args.quiet)
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from ..runs import format_table, list_runs

    records = list_runs(args.root, sort=args.sort, reverse=args.reverse, status=args.status)
    if args.json:
        print(json.dumps(records, indent=2))
    elif records:
        print(format_table(records))
    else:
        print(f"no runs under {args.root}" + (f" with status {args.status}" if args.status else ""))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from ..runs import SORT_KEYS

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

    r = sub.add_parser("runs", help="list the run folders with their key figures",
                       description="List the run folders under a folder (default runs/), study trials included.")
    r.add_argument("root", nargs="?", default="runs", help="the folder that holds the runs (default: runs)")
    r.add_argument("--sort", default="run", choices=SORT_KEYS, metavar="KEY",
                   help=f"sort by {', '.join(SORT_KEYS)} (default: run, i.e. by name, oldest first)")
    r.add_argument("--reverse", action="store_true", help="largest first (e.g. --sort val_accuracy --reverse)")
    r.add_argument("--status", choices=("complete", "incomplete", "pruned", "failed", "interrupted"),
                   help="only the runs with this status")
    r.add_argument("--json", action="store_true", help="print a JSON array, one object per run")
    r.set_defaults(func=cmd_runs)
