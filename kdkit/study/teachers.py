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
import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from kdkit.api import BuildContext
from kdkit.shared_work import SharedWorkBusy, without_waiting
from kdkit.study.resolve import PlannedRun


@contextlib.contextmanager
def file_lock(path: Path, *, wait: bool = True) -> Iterator[bool]:
    """An exclusive ``flock`` on ``path`` (created if needed), released on exit.

    Yields True once held; with ``wait=False`` it yields False at once (holding nothing) when
    another process (or another open of the file) holds the lock.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
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


class TeacherGate:
    """Decides, before each run of a study worker, whether it can run now (see module doc).

    ``gate(run, wait)`` returns True when ``run`` can start: it needs no teacher, its teacher
    is ready (built by any worker of this study directory: a ``.teacher-KEY.ready`` marker
    written under the lock), or this worker got the teacher's lock and built it. With
    ``wait=False`` it returns False at once when another worker holds the lock (building), and
    also when the build needs shared work another process is doing (the code encoder's
    pre-training, :mod:`kdkit.shared_work`): the build stops before training anything and is
    retried after ``retry_s`` seconds. With ``wait=True`` it waits for both, then proceeds.
    """

    def __init__(
        self,
        lock_dir: Path,
        *,
        log: Callable[[str], None] = print,
        build: Callable[[PlannedRun], None] = build_teacher,
        retry_s: float = 30.0,
    ) -> None:
        self.lock_dir = lock_dir
        self.log = log
        self.build = build
        self.retry_s = retry_s
        #: keys this worker has seen ready (built here or found built)
        self.ready: set[str] = set()
        #: keys whose build found shared work busy, and when (not retried before ``retry_s``)
        self.busy: dict[str, float] = {}

    def _marker(self, key: str) -> Path:
        return self.lock_dir / f".teacher-{key}.ready"

    def __call__(self, run: PlannedRun, wait: bool) -> bool:
        key = teacher_key(run)
        if key is None or key in self.ready:
            return True
        if self._marker(key).exists():
            self.ready.add(key)
            return True
        if not wait and time.monotonic() - self.busy.get(key, -math.inf) < self.retry_s:
            return False  # its shared work was busy a moment ago: do not rebuild the task yet
        with file_lock(self.lock_dir / f".teacher-{key}.lock", wait=wait) as held:
            if not held:
                return False  # another worker is building it: run something else meanwhile
            if not self._marker(key).exists():  # not built while this worker waited
                labels = run.point.labels()
                what = f"teacher {labels['teacher']} for {labels['task']}"
                if key not in self.busy:
                    self.log(f"{what}: building (or reading the cache)")
                try:
                    with contextlib.nullcontext() if wait else without_waiting():
                        self.build(run)
                except SharedWorkBusy as busy:
                    if key not in self.busy:
                        self.log(f"{what}: {busy}; running other work meanwhile")
                    self.busy[key] = time.monotonic()
                    return False
                self._marker(key).write_text(run.run_id + "\n", encoding="utf-8")
        self.busy.pop(key, None)
        self.ready.add(key)
        return True
