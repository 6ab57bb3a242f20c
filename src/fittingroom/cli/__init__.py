"""The ``fittingroom`` command: parses arguments and calls the library, nothing more.

Each subcommand lives in its own module with a ``register(subparsers)`` that
adds its parser and sets ``func`` to the function that runs it. A user's
mistake (any :class:`~fittingroom.errors.FittingroomError`) prints one line,
``error: ...``, on stderr and exits with status 1; a usage error (an unknown flag, a value
of the wrong type) prints one line too, naming the ``--help`` to read, and exits with 2. So does an ``OSError`` that names a file (a full disk, a folder
that is not writable): that is the user's environment, not a bug. Any other
exception keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys

from ..core.console import one_line
from ..core.errors import FittingroomError
from ..core.version import __version__
from . import data, evaluate, export, models, predict, presets, runs, serve, train, tune

COMMANDS = (train, models, presets, predict, evaluate, serve, export, data, tune, runs)


class Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line: ``error: <what>; see `fittingroom train --help```."""

    def error(self, message: str):
        self.exit(2, f"error: {one_line(message)}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="fittingroom",
        description="Train, evaluate, explain and serve neural-network classifiers for small images.",
    )
    parser.add_argument("--version", action="version", version=f"fittingroom {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except FittingroomError as exc:
        print(f"error: {one_line(str(exc))}", file=sys.stderr)
        return 130 if type(exc).__name__ == "TrainingInterrupted" else 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `fittingroom ... | head`
        return 0
    except OSError as exc:
        if exc.errno is None or exc.filename is None:
            raise
        print(f"error: {one_line(str(exc.filename))}: {exc.strerror}; check the path, its folder's permissions and the free "
              "disk space", file=sys.stderr)
        return 1
