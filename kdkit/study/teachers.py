"""Teachers shared by a study: each (task, teacher) is built once, before the runs that use it.

A teacher that kdkit trains (``code-teacher``, ``minilm``) is trained by its first build and read
from the cache by every later one (the cache key covers the task's data and the teacher's
options). Workers of one machine share the cache, so the study builds each teacher under a file
lock in the study directory: a second worker waits for the first instead of training the same
teacher again. Workers start with different teachers (rotated order), so several teachers train
at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from kdkit.api import BuildContext
from kdkit.study.resolve import PlannedRun


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if needed), released on exit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def teacher_key(run: PlannedRun) -> str | None:
    """What identifies a run's teacher build: task and teacher sections, cache dir, length."""
    comps = run.resolved.components
    if "teacher" not in comps:
        return None
    what = [
        comps["task"].as_dict(),
        comps["teacher"].as_dict(),
        run.resolved.run.cache.dir,
        run.resolved.run.training.max_length,
    ]
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def build_task_and_teacher(run: PlannedRun) -> tuple[Any, Any, Any]:
    """(task, its splits, the teacher) of ``run``, built as the engine builds them (the teacher is
    trained on first use and read from the cache afterwards)."""
    import torch

    from kdkit.engine.runner import resolve_device
    from kdkit.engine.tokenization import default_cache_dir

    cfg = run.resolved.run
    if cfg.training.num_threads:
        torch.set_num_threads(cfg.training.num_threads)
    ctx = BuildContext(
        device=resolve_device(cfg.training.device),
        seed=cfg.seed,
        cache_dir=str(default_cache_dir(cfg.cache.dir)),
        max_length=cfg.training.max_length,
        kernel_impl=cfg.kernels.impl,
    )
    comps = run.resolved.components
    task = comps["task"].component.build(comps["task"].options, ctx)
    ctx.task, ctx.splits = task, task.load()
    teacher = comps["teacher"].component.build(comps["teacher"].options, ctx)
    return task, ctx.splits, teacher


def build_teacher(run: PlannedRun) -> None:
    """Build (train, or load from the cache) the teacher of ``run``."""
    build_task_and_teacher(run)


def prepare_teachers(
    runs: Sequence[PlannedRun],
    lock_dir: Path,
    *,
    rotate: int = 0,
    log: Callable[[str], None] = print,
    build: Callable[[PlannedRun], None] = build_teacher,
) -> list[str]:
    """Build every distinct teacher of ``runs`` once (under a lock); returns their keys."""
    firsts: dict[str, PlannedRun] = {}
    for run in runs:
        key = teacher_key(run)
        if key is not None and key not in firsts:
            firsts[key] = run
    keys = list(firsts)
    if keys:
        shift = rotate % len(keys)
        keys = keys[shift:] + keys[:shift]
    for key in keys:
        run = firsts[key]
        labels = run.point.labels()
        with file_lock(lock_dir / f".teacher-{key}.lock"):
            log(
                f"teacher {labels['teacher']} for {labels['task']}: building (or reading the cache)"
            )
            build(run)
    return keys
