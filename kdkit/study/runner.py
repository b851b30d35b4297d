"""Running a study: every planned run of this shard, through the ordinary engine.

A complete run (``summary.json`` present) is skipped; a run with a checkpoint resumes through the
engine's resume; anything else starts afresh (a directory left by a run killed before its first
checkpoint holds nothing worth keeping and is cleared, since the engine refuses to start a run
in a directory that already holds one). A run that fails is recorded in its directory
(``study_error.json``) and the study goes on to the next run (``fail_fast`` stops instead); the
next ``kdkit study`` retries it. Killing the study at any moment loses at most the steps since the
killed run's last checkpoint.

Runs execute in this process by default (no interpreter start-up per run) or, with
``isolate=True``, each in a fresh ``python -m kdkit run`` subprocess (a crash or leak in one run
cannot touch the next).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdkit.engine.persist import atomic_write_text
from kdkit.errors import KdkitError
from kdkit.progress import PlainProgress, progress_bar
from kdkit.study.grid import Grid, execution_order
from kdkit.study.resolve import PlannedRun
from kdkit.study.results import ERROR_FILE, POINT_FILE, run_status
from kdkit.study.shard import Shard, select

#: The manifest of a study directory.
STUDY_FILE = "study.json"
#: The run file each run directory keeps (what ``kdkit run`` would be given).
RUN_FILE = "study_run.yaml"

Executor = Callable[[PlannedRun, bool], None]
#: ``gate(run, wait) -> bool``: whether ``run`` can start now (its teacher ready); with
#: ``wait=False`` it may say no at once (the teacher is being built elsewhere), with
#: ``wait=True`` it blocks until the run can start (:class:`kdkit.study.teachers.TeacherGate`).
Gate = Callable[[PlannedRun, bool], bool]
#: ``claim(run) -> bool``: whether this worker may run ``run`` (False: another worker took it).
Claim = Callable[[PlannedRun], bool]


class RunQueue:
    """The runs of one ``kdkit study --workers N`` call, shared by its N local workers.

    Every worker walks the whole study in the same order and claims a run just before starting it,
    by creating ``DIR/<run id>`` exclusively (``O_CREAT | O_EXCL``: atomic on a local file
    system); a run another worker claimed is skipped. So a worker that finishes its share early
    takes the next runs instead of idling, whatever each run costs (a fixed ``--shard i/N`` split
    balances run *counts*, not run *times*). ``DIR`` is private to the call: a run claimed by a
    worker that then failed or died is retried by the next call, as with shards.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def __call__(self, run: PlannedRun) -> bool:
        try:
            fd = os.open(self.directory / run.run_id, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        os.write(fd, f"{os.getpid()}\n".encode())
        os.close(fd)
        return True


@dataclass
class StudyOutcome:
    """What one ``kdkit study`` call did."""

    skipped: list[str] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    #: runs another worker of the same call claimed (:class:`RunQueue`)
    taken: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether no run failed."""
        return not self.failed


def point_record(run: PlannedRun) -> dict[str, Any]:
    """What ``study_point.json`` holds: the run id, axis labels and the sections behind them."""
    values = run.point.values
    return {
        "run_id": run.run_id,
        "labels": run.point.labels(),
        "sections": {
            a: (dict(v.section) if v.section is not None else None)
            for a, v in values.items()
            if a != "seed"
        },
        "seed": values["seed"].seed,
        "config": run.resolved.as_dict(),
    }


def write_manifest(grid: Grid, runs: Sequence[PlannedRun]) -> Path:
    """Write ``study.json`` (grid name and file, its hash, every run id) and a copy of the grid.

    Every shard writes the same content, so concurrent shards on a shared disk do not conflict.
    """
    out = grid.output_dir
    out.mkdir(parents=True, exist_ok=True)
    text = Path(grid.filename).read_text(encoding="utf-8") if grid.filename else ""
    manifest = {
        "name": grid.name,
        "grid_file": grid.filename,
        "grid_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "axes": {
            a: [v.label if a != "seed" else v.seed for v in vals] for a, vals in grid.axes.items()
        },
        "runs": sorted(r.run_id for r in runs),
    }
    atomic_write_text(out / "grid.yaml", text)
    atomic_write_text(out / STUDY_FILE, json.dumps(manifest, indent=2) + "\n")
    return out / STUDY_FILE


def engine_executor(plugins: Any, progress: bool = True) -> Executor:
    """Run in this process through ``kdkit.engine.run`` (what ``kdkit run`` calls)."""

    def execute(run: PlannedRun, resume: bool) -> None:
        from kdkit import engine

        rc = engine.run(
            run.resolved, plugins, resume=str(run.run_dir) if resume else None, progress=progress
        )
        if rc not in (0, None):
            raise KdkitError(f"the run exited with status {rc}", where=str(run.run_dir))

    return execute


def subprocess_executor(python: str = sys.executable) -> Executor:
    """Run each run as ``python -m kdkit run RUN_DIR/study_run.yaml [--resume RUN_DIR]``."""

    def execute(run: PlannedRun, resume: bool) -> None:
        cmd = [python, "-m", "kdkit", "run", str(run.run_dir / RUN_FILE)]
        if resume:
            cmd += ["--resume", str(run.run_dir)]
        done = subprocess.run(cmd, check=False)
        if done.returncode != 0:
            raise KdkitError(
                f"`{' '.join(cmd)}` exited with status {done.returncode}",
                where=str(run.run_dir),
                fix="see the run's output above; the next `kdkit study` retries (and resumes) it",
            )

    return execute


def run_study(
    grid: Grid,
    runs: Sequence[PlannedRun],
    execute: Executor,
    *,
    shard: Shard = Shard(),
    max_runs: int | None = None,
    fail_fast: bool = False,
    log: Callable[[str], None] = print,
    prepare: Callable[[Sequence[PlannedRun], int], Any] | None = None,
    progress: bool = False,
    gate: Gate | None = None,
    claim: Claim | None = None,
) -> StudyOutcome:
    """Run this shard's incomplete runs in seed-major order (see :func:`execution_order`).

    ``prepare(runs, shard_index)``, if given, is called first with the incomplete runs (e.g.
    :func:`kdkit.study.teachers.prepare_teachers`: every teacher built up front). ``gate`` (the
    CLI's: :class:`kdkit.study.teachers.TeacherGate`) is asked before each run whether it can
    start; a run it puts off (its teacher being built by another worker) waits while the next
    runnable runs go first, so a worker never idles on a teacher lock while it has other work. ``progress`` shows a bar
    over the runs to do, with the ETA from the mean time of the runs done so far (on stderr: a
    bar on a terminal, else a line after each run; :mod:`kdkit.progress`).
    """
    write_manifest(grid, runs)
    mine = select(runs, shard, key=lambda r: r.run_id)
    order = execution_order([r.point for r in mine], grid)
    by_id = {r.run_id: r for r in mine}
    outcome = StudyOutcome()
    start = time.perf_counter()
    todo = [by_id[p.run_id] for p in order]
    n_todo = sum(run_status(r.run_dir) != "complete" for r in todo)
    log(f"study {grid.name}: shard {shard}: {len(todo)} runs, {n_todo} to run -> {grid.output_dir}")
    if prepare is not None:
        prepare([r for r in todo if run_status(r.run_dir) != "complete"], shard.index - 1)
    planned = n_todo if max_runs is None else min(n_todo, max_runs)
    # interval 0: in a log file, one line after every run (a run takes minutes, not milliseconds)
    bar = progress_bar(
        total=planned,
        desc=f"study {grid.name}",
        unit="run",
        smoothing=0,
        disable=not progress or planned == 0,
        interval=0.0,
    )
    if progress and log is print and not isinstance(bar, PlainProgress):
        log = bar.write  # a print() would break the redrawn bar
    try:
        _run_all(todo, n_todo, execute, outcome, bar, log, max_runs, fail_fast, gate, claim)
    finally:
        bar.close()
    outcome.seconds = time.perf_counter() - start
    return outcome


def _run_all(
    todo: Sequence[PlannedRun],
    n_todo: int,
    execute: Executor,
    outcome: StudyOutcome,
    bar: Any,
    log: Callable[[str], None],
    max_runs: int | None,
    fail_fast: bool,
    gate: Gate | None = None,
    claim: Claim | None = None,
) -> None:
    """The loop of :func:`run_study`: each incomplete run in ``todo`` (``n_todo`` of them),
    recorded in ``outcome``; ``bar`` counts the runs done. A run ``gate`` puts off goes back to
    the queue behind the runs that can start now; the gate is asked to wait only when none can."""
    done = 0
    pending = list(todo)
    while pending:
        run = pending[0]
        status = run_status(run.run_dir)
        if status == "complete":
            pending.pop(0)
            outcome.skipped.append(run.run_id)
            continue
        if max_runs is not None and done >= max_runs:
            break
        if gate is not None:
            # the first run in order that can start now; if none can, wait for the first one
            ready = next((r for r in pending if gate(r, False)), None)
            if ready is None:
                gate(run, True)
            else:
                run = ready
                status = run_status(run.run_dir)
        pending.remove(run)
        if status == "complete":  # a later run that is already complete
            outcome.skipped.append(run.run_id)
            continue
        if claim is not None and not claim(run):
            outcome.taken.append(run.run_id)  # another worker of this call runs it
            continue
        resume = status == "partial"
        done += 1
        log(f"[{done}/{n_todo}] {'resume' if resume else 'run'} {run.run_id}")
        if status in ("started", "failed"):
            shutil.rmtree(run.run_dir)  # no checkpoint: nothing to resume, nothing to keep
        run.run_dir.mkdir(parents=True, exist_ok=True)
        (run.run_dir / ERROR_FILE).unlink(missing_ok=True)
        atomic_write_text(run.run_dir / POINT_FILE, json.dumps(point_record(run), indent=2) + "\n")
        atomic_write_text(run.run_dir / RUN_FILE, run.resolved.to_yaml())
        t0 = time.perf_counter()
        try:
            execute(run, resume)
        except Exception as exc:  # a failed run is recorded and the study goes on
            bar.update(1)
            message = (
                exc.render() if isinstance(exc, KdkitError) else f"{type(exc).__name__}: {exc}"
            )
            atomic_write_text(
                run.run_dir / ERROR_FILE,
                json.dumps({"error": message, "traceback": traceback.format_exc()}, indent=2),
            )
            outcome.failed[run.run_id] = message
            log(f"  failed: {message.splitlines()[0]}")
            if fail_fast:
                break
            continue
        bar.update(1)
        if run_status(run.run_dir) != "complete":
            message = "the engine returned but wrote no summary.json"
            outcome.failed[run.run_id] = message
            atomic_write_text(run.run_dir / ERROR_FILE, json.dumps({"error": message}))
            log(f"  failed: {message}")
            continue
        (outcome.resumed if resume else outcome.ran).append(run.run_id)
        log(f"  done in {time.perf_counter() - t0:.1f}s")
