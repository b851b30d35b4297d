"""``kdkit teach``: fine-tune a teacher on a task and save it in ``save_pretrained`` format.

The run file's ``task`` and ``teacher`` sections say what. A teacher whose plugin gives a model to
fine-tune (``teacher: {name: hf, path: BASE}``: the pretrained model in BASE with a new head for
the task's labels) is fine-tuned with the study's defaults (5 epochs, batch 32, lr 2e-5, 10 %
warm-up); a preset that kdkit trains itself (``code-teacher``, ``minilm``) is trained (or reused
from the cache) and copied out. The result loads as ``teacher: {name: hf, path: OUT}``.
The file needs no ``student`` or ``method`` section (they are not used); ``training.num_threads``
and ``training.device`` apply.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from kdkit.config import apply_overrides, default_document, load_document, validate
from kdkit.discovery import load_plugins
from kdkit.errors import KdkitError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "teach",
        help="fine-tune a teacher on a task",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    p.add_argument(
        "file", nargs="?", help="run file with task and teacher (default: the default run)"
    )
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--output", "-o", required=True, help="directory to save the teacher in")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=teach)


def teacher_run(file: str | None, overrides: list[str], registry: Any) -> Any:
    """The validated run of ``file`` (default: the default run) for a command that needs only
    its task and teacher: a missing ``student`` or ``method`` is taken from the default run."""
    doc = default_document() if file is None else load_document(file)
    apply_overrides(doc, overrides)
    default = default_document().data
    for unused in ("student", "method"):
        doc.data.setdefault(unused, default[unused])
    return validate(doc, registry)


def teacher_context(run: Any, *, progress: bool) -> Any:
    """The :class:`~kdkit.api.BuildContext` a teacher is built in for ``run`` (its device, seed,
    cache, max length), with ``training.num_threads`` applied to torch."""
    import torch

    from kdkit.api import BuildContext
    from kdkit.engine.runner import resolve_device
    from kdkit.engine.tokenization import default_cache_dir

    if run.training.num_threads:
        torch.set_num_threads(run.training.num_threads)
    return BuildContext(
        device=resolve_device(run.training.device),
        seed=run.seed,
        cache_dir=str(default_cache_dir(run.cache.dir)),
        max_length=run.training.max_length,
        extra={"progress": progress},
    )


def teach(args: argparse.Namespace) -> int:
    """Fine-tune (or train and copy) the run file's teacher into ``--output``; print its metrics."""
    import torch

    from kdkit.config import TrainingConfig
    from kdkit.engine.teach import FineTuneJob, fine_tune

    plugins = load_plugins()
    resolved = teacher_run(args.file, args.overrides, plugins.registry)
    out = Path(args.output)
    if out.exists() and any(out.iterdir()):
        raise KdkitError(
            "the output directory is not empty",
            where=str(out),
            fix="choose a new --output directory (kdkit never overwrites)",
        )
    if "teacher" not in resolved.components:
        raise KdkitError(
            "the run file has no teacher section",
            where=args.file or "<default run>",
            fix="add e.g. `teacher: {name: hf, path: DIR}` or `teacher: code-teacher`",
        )
    run = resolved.run
    ctx = teacher_context(run, progress=not args.quiet)
    device = ctx.device
    tcomp = resolved.components["task"]
    task = tcomp.component.build(tcomp.options, ctx)
    ctx.task, ctx.splits = task, task.load()
    teacher = resolved.components["teacher"]
    if teacher.component.trainable is not None:  # the plugin gives the model to fine-tune
        model = teacher.component.build_trainable(teacher.options, ctx)
        cfg = TrainingConfig(
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            warmup_ratio=args.warmup_ratio,
            max_length=run.training.max_length,
            device=run.training.device,
        )
        work = out.with_name(f".{out.name}.work")
        shutil.rmtree(work, ignore_errors=True)
        torch.manual_seed(run.seed)
        job = FineTuneJob(
            task=task,
            splits=ctx.splits,
            training=cfg,
            work_dir=work,
            seed=run.seed,
            device=device,
            progress=not args.quiet,
            log=lambda m: print(m, file=sys.stderr),
            registry=plugins.registry,
        )
        result = fine_tune(model, job)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            out.rmdir()
        os.replace(work / "best" / "model", out)
        shutil.rmtree(work, ignore_errors=True)
    else:  # a preset: trained (or reused) in the cache, then copied out
        built = teacher.component.build(teacher.options, ctx)
        source = getattr(built, "directory", None)
        if not source or not Path(source).is_dir():
            raise KdkitError(
                f"the teacher '{teacher.component.name}' gives no model to fine-tune and saved "
                "none when built",
                where="teacher.name",
                fix="use a teacher kdkit can fine-tune (e.g. `teacher: {name: hf, path: DIR}`) "
                "or one it trains itself; a plugin's teacher needs trainable=... (see "
                "docs/models.md)",
            )
        shutil.copytree(source, out, dirs_exist_ok=True)
        spec_file = out / "spec.json"  # what cached_teacher_dir records (with the metrics)
        spec = json.loads(spec_file.read_text(encoding="utf-8")) if spec_file.is_file() else {}
        result = spec.get("result", {})
    head = task.headline_metric
    print(
        json.dumps(
            {
                "teacher": str(out),
                "parameters": result.get("parameters"),
                f"validation_{head}": result.get("validation", {}).get(head),
                f"test_{head}": result.get("test", {}).get(head),
            },
            indent=2,
        )
    )
    print(f"use it with:  teacher: {{name: hf, path: {out}}}", file=sys.stderr)
    return 0
