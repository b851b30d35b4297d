"""``kdkit run``: distil a teacher into a student as one run file describes.

This module resolves and validates the run (every component is looked up and its options
checked) and hands it to :mod:`kdkit.engine`.
"""

from __future__ import annotations

import argparse

from kdkit.config import load_config
from kdkit.discovery import load_plugins


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run a distillation (no FILE: the offline default job)",
        description="Run the distillation a run file describes. With no FILE, run the embedded "
        "default job, which works offline on a fresh machine.",
    )
    p.add_argument("file", nargs="?", help="run file (YAML); default: the embedded default job")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. --set training.epochs=2 (repeatable)")  # fmt: skip
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    p.add_argument("--dry-run", action="store_true", help="validate and print the resolved run")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    plugins = load_plugins()
    resolved = load_config(args.file, plugins.registry, args.overrides)
    if args.dry_run:
        print(resolved.to_yaml(), end="")
        return 0
    from kdkit import engine

    return engine.run(resolved, plugins, resume=args.resume)
