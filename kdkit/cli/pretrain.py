"""``kdkit pretrain``: pre-train (once per machine) the code encoder a run file's teacher starts
from, and optionally copy it out as an ordinary Hugging Face folder.

The run file's ``teacher`` must be ``code-teacher`` with a ``pretrain`` section (the default run
has none: ``kdkit pretrain --set teacher.pretrain.steps=1500`` adds one). The encoder is cached under ``CACHE/pretrained/``; an interrupted pre-training
resumes when the same command is run again. ``--output DIR`` copies the result, which loads with
``AutoModelForMaskedLM.from_pretrained(DIR)`` (and as ``teacher: {name: hf, path: DIR}`` after
``kdkit teach`` fine-tunes it).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from kdkit.discovery import load_plugins
from kdkit.errors import KdkitError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain",
        help="pre-train the code teacher's encoder on local code (cached, resumable)",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    p.add_argument("file", nargs="?", help="run file (default: the default run)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--output", "-o", help="also copy the encoder folder here (must not exist)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=pretrain)


def pretrain(args: argparse.Namespace) -> int:
    """Pre-train (or reuse) the encoder; print its folder and record as JSON."""
    from kdkit.cli.teach import teacher_context, teacher_run
    from kdkit.plugins.models.pretrain import read_record
    from kdkit.plugins.teachers.hf import code_encoder

    resolved = teacher_run(args.file, args.overrides, load_plugins().registry)
    where = args.file or "<default run>"
    teacher = resolved.components.get("teacher")
    if teacher is None or teacher.component.name != "code-teacher":
        raise KdkitError(
            "kdkit pretrain pre-trains the code-teacher's encoder, and this run has "
            + ("no teacher" if teacher is None else f"the teacher '{teacher.component.name}'"),
            where=f"{where}: teacher",
            fix="use `teacher: {name: code-teacher, pretrain: {steps: 1500}}`",
        )
    options: Any = teacher.options  # CodeTeacherOptions (a plugin's model: read as Any)
    if options.pretrain is None:
        raise KdkitError(
            "the code-teacher of this run has no pretrain section",
            where=f"{where}: teacher.pretrain",
            fix="add `pretrain: {}` (defaults) or e.g. `pretrain: {steps: 1500}` to the teacher",
        )
    out = Path(args.output) if args.output else None
    if out is not None and out.exists():
        raise KdkitError(
            "the output directory exists",
            where=str(out),
            fix="choose a new --output directory (kdkit never overwrites)",
        )
    ctx = teacher_context(resolved.run, progress=not args.quiet)
    folder = code_encoder(options, ctx)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(folder, out)
    record = read_record(folder) or {}
    print(
        json.dumps(
            {
                "encoder": str(out or folder),
                "cached": str(folder),
                "functions": record.get("corpus", {}).get("functions"),
                "steps": record.get("options", {}).get("steps"),
                "final_loss": (record.get("losses") or [{}])[-1].get("loss"),
                "train_seconds": record.get("train_seconds"),
            },
            indent=2,
        )
    )
    return 0
