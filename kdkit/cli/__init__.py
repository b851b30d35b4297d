"""The ``kdkit`` command line.

Each sub-command lives in its own module of this package and exposes
``add_parser(subparsers)``, which adds its parser and sets ``func`` (``Namespace -> int``).
User errors (:class:`kdkit.errors.KdkitError`) are printed without a traceback and exit with
status 2; ``KDKIT_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from kdkit.errors import KdkitError

#: Sub-command modules, in the order ``kdkit --help`` lists them.
COMMANDS = [
    "run",
    "teach",
    "predict",
    "data",
    "plugins",
    "config",
    "cache",
    "bench",
    "study",
    "report",
]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every sub-command that is available."""
    parser = argparse.ArgumentParser(
        prog="kdkit",
        description="Knowledge distillation of code-understanding models. "
        "`kdkit run` with no arguments runs the offline default job.",
    )
    from kdkit import __version__

    parser.add_argument("--version", action="version", version=f"kdkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"kdkit.cli.{name}")
        except ModuleNotFoundError as exc:  # a command not built yet; anything else is a bug
            if exc.name == f"kdkit.cli.{name}":
                continue
            raise
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kdkit`` console script."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not args_list:
        args_list = ["run"]  # `kdkit` alone runs the default job, like `kdkit run`
    args = parser.parse_args(args_list)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KdkitError as exc:
        if os.environ.get("KDKIT_DEBUG"):
            raise
        print(f"kdkit: error: {exc.render()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("kdkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `kdkit plugins --json | head`: the reader left; not an error
        sys.stderr.close()
        return 0


def run_main() -> None:  # pragma: no cover - console script shim
    sys.exit(main())
