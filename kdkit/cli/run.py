"""``kdkit run``: distil a teacher into a student as one run file describes.

* ``kdkit run`` (no file): the offline default job — exception classification built from the
  standard library, a code teacher kdkit trains (cached), an FT and a KD student of one size,
  and a comparison table (``--set method.name=X``: FT against method X).
* ``kdkit run FILE``: one run.
* ``kdkit run --resume RUN_DIR``: continue an interrupted run with the configuration stored in it.

``--json`` prints the summary (the default job: the comparison) as JSON on stdout and nothing
else there: progress, evaluations and tables go to stderr, so ``kdkit run --json FILE | jq``
works.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Any

from kdkit.config import load_config
from kdkit.discovery import load_plugins
from kdkit.errors import KdkitError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run a distillation (no FILE: the offline default job)",
        description="Run the distillation a run file describes. With no FILE, run the embedded "
        "default job (teacher -> FT student -> KD student -> comparison), which works offline on "
        "a fresh machine; --set method.name=X compares FT with method X instead of KD.",
    )
    p.add_argument("file", nargs="?", help="run file (YAML); default: the embedded default job")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting, e.g. --set training.epochs=2 (repeatable)",
    )
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue an interrupted run (RUN_DIR/checkpoints/previous: from the checkpoint "
        "before the last)",
    )
    p.add_argument("--dry-run", action="store_true", help="validate and print the resolved run")
    p.add_argument(
        "--output",
        metavar="DIR",
        help="default job only: where its runs go "
        "(default runs/default; --set output_dir=DIR does the same)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--json",
        action="store_true",
        help="print the summary as JSON on stdout "
        "(the default job: its comparison; --dry-run: the resolved run); everything "
        "else goes to stderr",
    )
    p.set_defaults(func=run)


def default_job_root(output: str | None, overrides: list[str], output_dir: str) -> str | None:
    """Where the default job puts its runs: ``--output``, else ``--set output_dir=...`` (with
    its ``{method}``-style fields filled in), else ``None`` (the job's ``runs/default``)."""
    set_dir = any(item.split("=", 1)[0].strip() == "output_dir" for item in overrides)
    if output and set_dir and output != output_dir:
        raise KdkitError(
            f"--output {output} and --set output_dir={output_dir} disagree",
            where="kdkit run",
            fix="give one of them",
        )
    return output or (output_dir if set_dir else None)


def run(args: argparse.Namespace) -> int:
    """``kdkit run [FILE]``: the default job, one run, a resume or a dry run."""
    if not args.json:
        _run(args)
        return 0
    stdout = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):  # only the JSON goes to stdout
        result = _run(args)
    json.dump(result, stdout, indent=2, default=str)
    stdout.write("\n")
    return 0


def _run(args: argparse.Namespace) -> dict[str, Any]:
    """Do what ``args`` ask; returns the summary, the comparison or the resolved run."""
    plugins = load_plugins()
    file = args.file
    if args.resume and not file:
        from kdkit.engine.checkpoint import checkpoint_dir

        stored = checkpoint_dir(args.resume)[0] / "config.yaml"  # RUN_DIR or one of its checkpoints
        if not stored.is_file():
            raise KdkitError(
                "not a kdkit run directory (no config.yaml)",
                where=args.resume,
                fix="pass the output_dir of a run started with `kdkit run FILE`",
            )
        file = str(stored)
    resolved = load_config(file, plugins.registry, args.overrides)
    if args.dry_run:
        if not args.json:
            print(resolved.to_yaml(), end="")
        return resolved.as_dict()
    if file is None:
        from kdkit.engine.default_job import run_default_job

        output = default_job_root(args.output, args.overrides, str(resolved.output_dir()))
        return run_default_job(resolved, plugins, output=output, progress=not args.quiet)
    from kdkit.engine.runner import run_once

    return run_once(resolved, plugins, resume=args.resume, progress=not args.quiet)
