"""``kdkit cache import FILE --task TASK``: teacher outputs computed elsewhere, validated against
the task's split and stored as a cache entry every logit-based method trains from
(``cache.teacher_import: NAME``). The file format is in ``docs/caching.md``.

This module is imported by ``kdkit cache`` at start-up, so it imports nothing heavy at module
level (torch and the task machinery load only when an import runs).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from kdkit.errors import KdkitError


def add_import_parser(csub: argparse._SubParsersAction) -> None:
    """Add ``kdkit cache import`` to the ``kdkit cache`` sub-commands."""
    q = csub.add_parser(
        "import",
        help="import teacher outputs computed elsewhere (full logits or top-k)",
        description="Validate a safetensors file of teacher outputs (ids of the split's rows; "
        "logits [N, C] or topk_logprobs/topk_indices/tail; metadata model, temperature, split, "
        "num_classes, format_version) against a task's split, and store it in the cache. A run "
        "trains from it with `cache: {teacher_import: NAME}` (no teacher section needed). "
        "Format: docs/caching.md.",
    )
    q.add_argument("file", metavar="FILE", help="the safetensors file")
    q.add_argument("--task", help="the task's name (default options; --set task.X=V for others)")
    q.add_argument(
        "--config",
        metavar="RUN.yaml",
        help="take the task (with its options) and cache.dir from this run file",
    )
    q.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    q.add_argument("--split", help="the split the file covers (default: its 'split' metadata)")
    q.add_argument("--name", help="the import's name (default: from the file's 'model' metadata)")
    q.add_argument("--replace", action="store_true", help="replace an import of that name")
    q.add_argument("--json", action="store_true", help="print the entry's meta as JSON")
    q.set_defaults(func=cache_import)


def logits_fields(meta: dict[str, Any]) -> dict[str, Any]:
    """What ``kdkit cache ls`` shows of a teacher-output or imported entry's logits: the format
    (``full`` or ``topk k=.. T0=..``), the bytes per example beside full float32 logits, and the
    producing model of an import."""
    out: dict[str, Any] = {}
    fmt = meta.get("logits_format")
    if isinstance(fmt, dict) and fmt.get("format") == "topk":
        k = meta.get("k_stored", fmt.get("k"))
        out["logits"] = f"topk k={k} T0={fmt.get('temperature'):g}"
    elif "tensors" in meta and "logits" in (meta.get("tensors") or {}):
        out["logits"] = "full"
    for key in ("bytes_per_example", "full_logits_bytes_per_example", "source_model"):
        if meta.get(key) is not None:
            out[key] = meta[key]
    return out


def _run_document(args: argparse.Namespace, registry: Any) -> Any:
    from kdkit.config import apply_overrides, default_document, load_document, validate

    if not args.task and not args.config:
        raise KdkitError(
            "say which task the file is for",
            where="kdkit cache import",
            fix="pass --task NAME (e.g. --task exception) or --config RUN.yaml",
        )
    doc = load_document(args.config) if args.config else default_document()
    if args.config and args.task:
        section = doc.data.get("task")
        given = section.get("name") if isinstance(section, dict) else section
        if given != args.task:
            raise KdkitError(
                f"--task {args.task} but the run file's task is {given!r}",
                where=f"{args.config} (task)",
                fix="drop --task (the run file's task is used) or give the matching run file",
            )
    if not args.config:  # the task's own defaults, not the default run's task options
        doc.data["task"] = {"name": args.task}
    apply_overrides(doc, args.overrides)
    default = default_document().data
    for unused in ("student", "method"):
        doc.data.setdefault(unused, default[unused])
    return validate(doc, registry)


def cache_import(args: argparse.Namespace) -> int:
    """Validate and store the file; print where it went and how a run uses it."""
    import json

    from kdkit.api import BuildContext
    from kdkit.discovery import load_plugins
    from kdkit.engine.teacher_import import ImportRequest, import_outputs
    from kdkit.engine.tokenization import default_cache_dir

    plugins = load_plugins()
    resolved = _run_document(args, plugins.registry)
    run = resolved.run
    root = default_cache_dir(args.dir or run.cache.dir)
    tcomp = resolved.components["task"]
    ctx = BuildContext(
        seed=run.seed,
        cache_dir=str(root),
        max_length=run.training.max_length,
        extra={"progress": False},
    )
    task = tcomp.component.build(tcomp.options, ctx)
    meta = import_outputs(
        ImportRequest(
            file=Path(args.file),
            task=task,
            task_name=tcomp.component.name,
            split=args.split,
            name=args.name,
            cache_root=root,
            replace=args.replace,
        )
    )
    if args.json:
        print(json.dumps(meta, indent=2))
        return 0
    shown = logits_fields(meta)
    print(
        f"imported {meta['rows']} rows of the {meta['task']} task's {meta['split']} split "
        f"({shown.get('logits')}, {shown['bytes_per_example']} B/example; full logits "
        f"{shown['full_logits_bytes_per_example']} B) from {meta['source_model']} "
        f"at T={meta['temperature']:g}\n"
        f"  entry: {meta['path']}\n"
        f"  train from it: `cache: {{teacher_import: {meta['name']}}}` in the run file "
        f"(or --set cache.teacher_import={meta['name']}); no teacher section is needed"
    )
    return 0
