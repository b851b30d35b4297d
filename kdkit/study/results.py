"""Reading run directories: their status, their point in the grid, their results.

A study's run directory is an ordinary run directory (written by :mod:`kdkit.engine`) plus one
file the study writes before the run starts, ``study_point.json``: the run's axis labels and
sections. ``kdkit report`` needs nothing else, so run directories copied together from several
machines (or shards) merge by simply being in the same ``runs/`` folder.

Status of a run directory:

* ``complete`` — ``summary.json`` exists (the engine writes it last);
* ``partial`` — a resumable checkpoint exists (``checkpoints/last/state.json``);
* ``failed`` — the study recorded an error (``study_error.json``); it is retried on the next call;
* ``started`` — the directory exists with neither; ``new`` — no directory yet.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

POINT_FILE = "study_point.json"
ERROR_FILE = "study_error.json"
SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.jsonl"


def run_status(run_dir: Path) -> str:
    """``complete``, ``partial``, ``failed``, ``started`` or ``new`` (see the module docstring)."""
    if (run_dir / SUMMARY_FILE).is_file():
        return "complete"
    if (run_dir / "checkpoints" / "last" / "state.json").is_file():
        return "partial"
    if (run_dir / ERROR_FILE).is_file():
        return "failed"
    return "started" if run_dir.exists() else "new"


def read_json(path: Path) -> Any | None:
    """A JSON file's content, or ``None`` when it is missing or unreadable (half-copied)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_steps(run_dir: Path) -> list[dict[str, Any]]:
    """The ``step`` records of ``metrics.jsonl`` (a torn last line is ignored)."""
    out: list[dict[str, Any]] = []
    try:
        lines = (run_dir / METRICS_FILE).read_text(encoding="utf-8").splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("event") == "step":
            out.append(rec)
    return out


def measured_seconds_per_example(run_dir: Path) -> float | None:
    """Training seconds per example of a run that trained, from its summary or step records.

    The summary's ``train_seconds`` / ``examples_seen`` when present; otherwise the median of the
    per-step ``examples_per_s`` in ``metrics.jsonl`` (the first step, which includes warm-up, is
    dropped when there are others).
    """
    summary = read_json(run_dir / SUMMARY_FILE)
    if isinstance(summary, dict):
        train = cast(
            "dict[str, Any]",
            summary.get("train") if isinstance(summary.get("train"), dict) else summary,
        )
        secs, seen = train.get("train_seconds"), train.get("examples_seen")
        if isinstance(secs, (int, float)) and isinstance(seen, (int, float)) and seen > 0:
            return float(secs) / float(seen)
    rates = [
        r["examples_per_s"]
        for r in read_steps(run_dir)
        if isinstance(r.get("examples_per_s"), (int, float))
        and math.isfinite(r["examples_per_s"])
        and r["examples_per_s"] > 0
    ]
    if len(rates) > 1:
        rates = rates[1:]
    if not rates:
        return None
    rates.sort()
    return 1.0 / rates[len(rates) // 2]


# ----------------------------------------------------------------------------- collecting runs


@dataclass
class RunRecord:
    """One finished run as the report sees it.

    Scores are the headline metric on the test split of the best-on-validation student, as
    fractions (the report shows percent). ``teacher_score`` is the teacher's own test score in the
    same run (``None`` for runs without a teacher).
    """

    run_id: str
    run_dir: Path
    task: str
    teacher: str
    student: str
    method: str
    seed: int
    status: str
    metric: str
    score: float | None
    test: dict[str, float]
    student_family: str | None
    student_params: int | None
    teacher_params: int | None
    teacher_score: float | None
    train_seconds: float | None
    steps: int | None
    teacher_signal: str | None
    #: the summary's ``baselines`` value (the task's baselines, or why they are unavailable);
    #: kept out of ``results.json``'s runs (one copy per task is stored there instead).
    baselines: dict[str, Any] | None = None

    @property
    def cell(self) -> tuple[str, str, str, str]:
        """(task, teacher, student, method)."""
        return self.task, self.teacher, self.student, self.method


def _record(run_dir: Path, summary: dict[str, Any], point: dict[str, Any] | None) -> RunRecord:
    labels = (point or {}).get("labels") or {}
    student = summary.get("student") or {}
    teacher = summary.get("teacher") or {}
    metric = str(summary.get("headline_metric") or "accuracy")
    test = {
        k: float(v) for k, v in (summary.get("test") or {}).items() if isinstance(v, (int, float))
    }
    t_test = teacher.get("test") or {}
    return RunRecord(
        run_id=(point or {}).get("run_id") or run_dir.name,
        run_dir=run_dir,
        task=labels.get("task") or str(summary.get("task", "?")),
        teacher=labels.get("teacher") or (teacher.get("name") if teacher else "none") or "none",
        student=labels.get("student") or str(student.get("name", "?")),
        method=labels.get("method") or str(summary.get("method", "?")),
        seed=int(labels.get("seed", summary.get("seed", 0))),
        status=str(summary.get("status", "finished")),
        metric=metric,
        score=test.get(metric),
        test=test,
        student_family=student.get("family"),
        student_params=student.get("parameters"),
        teacher_params=teacher.get("parameters") if teacher else None,
        teacher_score=float(t_test[metric]) if metric in t_test else None,
        train_seconds=summary.get("train_seconds"),
        steps=summary.get("steps"),
        teacher_signal=summary.get("teacher_signal"),
        baselines=summary.get("baselines") if isinstance(summary.get("baselines"), dict) else None,
    )


def run_dirs(paths: Sequence[Path]) -> list[Path]:
    """Every run directory under ``paths`` (study dirs, their ``runs/`` folders, or run dirs)."""
    found: list[Path] = []
    for path in paths:
        if (path / SUMMARY_FILE).is_file() or (path / POINT_FILE).is_file():
            found.append(path)
            continue
        base = path / "runs" if (path / "runs").is_dir() else path
        if base.is_dir():
            found.extend(
                sorted(d for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
            )
    return found


def collect(paths: Sequence[Path], log: Callable[[str], None] | None = None) -> list[RunRecord]:
    """Finished runs under ``paths``, merged; a run id seen twice is kept once (the first).

    Directories without a readable ``summary.json`` (incomplete, or half-copied) are skipped and
    reported through ``log``.
    """
    records: dict[str, RunRecord] = {}
    for run_dir in run_dirs(paths):
        summary = read_json(run_dir / SUMMARY_FILE)
        if not isinstance(summary, dict):
            if log:
                log(f"skipped {run_dir}: {run_status(run_dir)} (no readable summary.json)")
            continue
        point = read_json(run_dir / POINT_FILE)
        rec = _record(run_dir, summary, point if isinstance(point, dict) else None)
        if rec.run_id in records:
            if log:
                log(
                    f"skipped {run_dir}: run {rec.run_id} already read from "
                    f"{records[rec.run_id].run_dir}"
                )
            continue
        records[rec.run_id] = rec
    return [records[k] for k in sorted(records)]


def from_results_json(path: Path) -> tuple[list[RunRecord], dict[str, Any]]:
    """The runs a report's ``results.json`` lists, and what else it holds (``name``, ``axes`` in
    the order of its cells, ``efficiency``, ``baselines``): to write a report again from a copy
    of its results, without the run directories (e.g. the committed ``docs/results/*``).
    A report folder's integrity manifest (written by ``kdkit report``) is checked first."""
    from kdkit.integrity import verify

    verify(
        Path(path).parent,
        artefact=f"study report in {Path(path).parent}",
        fix="write the report again (`kdkit report STUDY_DIR`) or restore its files",
        note=False,
    )
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        from kdkit.errors import KdkitError

        raise KdkitError(
            "not a kdkit report's results.json (no 'runs' list)",
            where=str(path),
            fix="pass the results.json that `kdkit report` wrote, or a study directory",
        )
    fields = set(RunRecord.__dataclass_fields__)
    records = []
    for run in data["runs"]:
        values = {k: v for k, v in run.items() if k in fields}
        values["run_dir"] = Path(values["run_dir"])
        records.append(RunRecord(**values))
    cells = data.get("cells") or []
    axes = {
        axis: list(dict.fromkeys(c[axis] for c in cells if axis in c))
        for axis in ("task", "teacher", "student", "method")
    }
    extra = {
        "name": data.get("name"),
        "axes": axes,
        "efficiency": data.get("efficiency") or {},
        "baselines": data.get("baselines") or {},
    }
    return records, extra
