"""``fittingroom runs``: the run folders under runs/ and their key figures."""

from __future__ import annotations

import argparse
import json

from ..runfolder.listing import SORT_KEYS


def cmd_runs(args: argparse.Namespace) -> int:
    from ..runfolder.listing import format_table, list_runs

    records = list_runs(args.root, sort=args.sort, reverse=args.reverse, status=args.status)
    if args.json:
        print(json.dumps(records, indent=2))
    elif records:
        print(format_table(records))
    else:
        print(f"no runs under {args.root}" + (f" with status {args.status}" if args.status else ""))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
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
