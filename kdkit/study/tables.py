"""The study's numbers: runs aggregated over seeds into cells, and the tables built from them.

A *cell* is one (task, teacher, student, method); its runs differ only by seed. Per cell the report
gives the headline metric as mean ± sample standard deviation over seeds (in percent), the
retention (cell mean as % of the teacher's own test score), the student's parameters as % of the
teacher's, the gain over FT (cell mean minus the FT cell mean of the same task and student, in
points) and the inference speed-up (teacher latency / student latency at batch 1, both measured in
the same process: ``efficiency.json``).

FT runs need no teacher; their cell (teacher ``none``) appears in every teacher's table of the
task, with retention against that teacher.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from kdkit.study.grid import NO_TEACHER
from kdkit.study.results import RunRecord


@dataclass
class TeacherScore:
    """A teacher's own test score on a task (the 100 % line), from the runs that used it."""

    task: str
    teacher: str
    metric: str
    score: float
    spread: float
    parameters: int | None
    runs: int


@dataclass
class Cell:
    """One (task, teacher, student, method) aggregated over its seeds (scores as fractions)."""

    task: str
    teacher: str
    student: str
    method: str
    metric: str
    seeds: list[int]
    scores: list[float]
    student_family: str | None
    student_params: int | None
    mean: float
    std: float | None
    teacher_score: float | None = None
    teacher_params: int | None = None
    retention: float | None = None
    params_pct: float | None = None
    gain_over_ft: float | None = None
    speedup: float | None = None
    throughput_ratio: float | None = None
    train_seconds: float | None = None
    baseline: bool = False
    extra: dict[str, float] = field(default_factory=dict)


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (``None`` for a single value)."""
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def teacher_scores(records: Sequence[RunRecord]) -> dict[tuple[str, str], TeacherScore]:
    """(task, teacher) -> the teacher's test score, averaged over the runs that report it."""
    acc: dict[tuple[str, str], list[RunRecord]] = {}
    for r in records:
        if r.teacher != NO_TEACHER and r.teacher_score is not None:
            acc.setdefault((r.task, r.teacher), []).append(r)
    out = {}
    for (task, teacher), recs in acc.items():
        scores = [r.teacher_score for r in recs if r.teacher_score is not None]
        out[(task, teacher)] = TeacherScore(
            task,
            teacher,
            recs[0].metric,
            statistics.fmean(scores),
            max(scores) - min(scores),
            recs[0].teacher_params,
            len(recs),
        )
    return out


def _order(values: Sequence[str], preferred: Sequence[str]) -> list[str]:
    rank = {v: i for i, v in enumerate(preferred)}
    return sorted(set(values), key=lambda v: (rank.get(v, len(rank)), v))


def build_cells(
    records: Sequence[RunRecord],
    efficiency: Mapping[str, Any] | None = None,
    axes: Mapping[str, Sequence[Any]] | None = None,
) -> tuple[list[Cell], dict[tuple[str, str], TeacherScore]]:
    """All table rows: one per (task, table teacher, student, method), in grid order.

    Returns the cells and the teacher scores. A cell appears once per teacher table: FT cells
    (teacher ``none``) are repeated in each teacher's table of their task.
    """
    axes = axes or {}
    finished = [r for r in records if r.status == "finished" and r.score is not None]
    teachers = teacher_scores(finished)
    by_cell: dict[tuple[str, str, str, str], list[RunRecord]] = {}
    for r in finished:
        by_cell.setdefault(r.cell, []).append(r)
    ft_means: dict[tuple[str, str], float] = {}  # the teacher-less baseline ("ft" preferred)
    for (task, teacher, student, _method), recs in sorted(
        by_cell.items(), key=lambda kv: kv[0][3] == "ft"
    ):
        if teacher == NO_TEACHER:
            ft_means[(task, student)] = statistics.fmean(float(r.score) for r in recs)  # type: ignore[arg-type]  # finished: score set
    speed = _speed_index(efficiency or {})
    cells = []
    tasks = _order([c[0] for c in by_cell], [str(v) for v in axes.get("task", [])])
    for task in tasks:
        task_teachers = _order(
            [t for (k, t) in teachers if k == task], [str(v) for v in axes.get("teacher", [])]
        )
        for table_teacher in task_teachers or [NO_TEACHER]:
            keys = [k for k in by_cell if k[0] == task and k[1] in (table_teacher, NO_TEACHER)]
            students = _order([k[2] for k in keys], [str(v) for v in axes.get("student", [])])
            methods = _order([k[3] for k in keys], [str(v) for v in axes.get("method", [])])
            for student in students:
                for method in methods:
                    key = next((k for k in keys if k[2] == student and k[3] == method), None)
                    if key is None:
                        continue
                    cells.append(_cell(by_cell[key], table_teacher, teachers, ft_means, speed))
    return cells, teachers


def _cell(
    recs: list[RunRecord], table_teacher: str, teachers: Mapping, ft_means: Mapping, speed: Mapping
) -> Cell:
    recs = sorted(recs, key=lambda r: r.seed)
    first = recs[0]
    scores = [float(r.score) for r in recs]  # type: ignore[arg-type]  # finished: score set
    mean, std = mean_std(scores)
    cell = Cell(
        first.task,
        table_teacher,
        first.student,
        first.method,
        first.metric,
        [r.seed for r in recs],
        scores,
        first.student_family,
        first.student_params,
        mean,
        std,
    )
    ts = teachers.get((first.task, table_teacher))
    if ts is not None:
        cell.teacher_score, cell.teacher_params = ts.score, ts.parameters
        if ts.score:
            cell.retention = 100.0 * mean / ts.score
        if ts.parameters and first.student_params:
            cell.params_pct = 100.0 * first.student_params / ts.parameters
    cell.baseline = first.teacher == NO_TEACHER
    ft = ft_means.get((first.task, first.student))
    if ft is not None and not cell.baseline:
        cell.gain_over_ft = 100.0 * (mean - ft)
    sp = speed.get((first.task, table_teacher, first.student))
    if sp is not None:
        cell.speedup, cell.throughput_ratio = sp
    secs = [r.train_seconds for r in recs if isinstance(r.train_seconds, (int, float))]
    cell.train_seconds = statistics.fmean(secs) if secs else None
    for metric in first.test:
        vals = [r.test[metric] for r in recs if metric in r.test]
        if len(vals) == len(recs):
            cell.extra[metric] = statistics.fmean(vals)
    return cell


def _speed_index(
    efficiency: Mapping[str, Any],
) -> dict[tuple[str, str, str], tuple[float, float | None]]:
    """(task, teacher, student) -> (latency speed-up at batch 1, throughput ratio)."""
    models = efficiency.get("models", [])
    teachers = {(m["task"], m["label"]): m for m in models if m.get("kind") == "teacher"}
    out = {}
    for m in models:
        if m.get("kind") != "student":
            continue
        for (task, label), t in teachers.items():
            if task != m["task"] or not m.get("latency_ms") or not t.get("latency_ms"):
                continue
            ratio = None
            if m.get("throughput") and t.get("throughput"):
                ratio = m["throughput"] / t["throughput"]
            out[(task, label, m["label"])] = (t["latency_ms"] / m["latency_ms"], ratio)
    return out


# ----------------------------------------------------------------------------- rendering


def pct(value: float | None, digits: int = 1) -> str:
    """A fraction as percent text, ``–`` when missing."""
    return "–" if value is None or not math.isfinite(value) else f"{100 * value:.{digits}f}"


def fmt(value: float | None, spec: str = ".1f", suffix: str = "") -> str:
    """A number as text, ``–`` when missing."""
    return "–" if value is None or not math.isfinite(value) else f"{value:{spec}}{suffix}"


def fmt_params(n: int | None) -> str:
    """``1.53M`` / ``125.9M`` / ``850K``."""
    if n is None:
        return "–"
    return f"{n / 1e6:.2f}M" if n < 1e7 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"


def score_text(cell: Cell) -> str:
    """``63.4 ± 1.2`` (percent; ``± –`` with one seed)."""
    return f"{pct(cell.mean)} ± {pct(cell.std)}"


TABLE_COLUMNS = [
    "student",
    "params",
    "% teacher params",
    "method",
    "seeds",
    "score",
    "retention %",
    "gain vs FT",
    "speed-up",
]


def table_rows(cells: Sequence[Cell]) -> list[list[str]]:
    """The text cells of one task/teacher table, in :data:`TABLE_COLUMNS` order."""
    rows = []
    for c in cells:
        gain = "–" if c.gain_over_ft is None else f"{c.gain_over_ft:+.1f}"
        rows.append(
            [
                c.student,
                fmt_params(c.student_params),
                fmt(c.params_pct, ".1f"),
                c.method,
                str(len(c.seeds)),
                score_text(c),
                fmt(c.retention, ".1f"),
                gain,
                fmt(c.speedup, ".1f", "x"),
            ]
        )
    return rows


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def groups(cells: Sequence[Cell]) -> list[tuple[tuple[str, str], list[Cell]]]:
    """Cells grouped by (task, teacher) in their order."""
    out: dict[tuple[str, str], list[Cell]] = {}
    for c in cells:
        out.setdefault((c.task, c.teacher), []).append(c)
    return list(out.items())


def best_method_rows(cells: Sequence[Cell]) -> list[list[str]]:
    """Per task, teacher and student: FT, the best other method, and its gain (the study's table)."""
    rows = []
    for (task, teacher), group in groups(cells):
        for student in dict.fromkeys(c.student for c in group):
            mine = [c for c in group if c.student == student]
            base = [c for c in mine if c.baseline]
            ft = next((c for c in base if c.method == "ft"), base[0] if base else None)
            kd = [c for c in mine if not c.baseline]
            if not kd:
                continue
            best = max(kd, key=lambda c: c.mean)
            beats = sum(1 for c in kd if ft is not None and c.mean > ft.mean)
            rows.append(
                [
                    task,
                    teacher,
                    student,
                    fmt_params(best.student_params),
                    "–" if ft is None else score_text(ft),
                    f"{score_text(best)} ({best.method})",
                    "–" if best.gain_over_ft is None else f"{best.gain_over_ft:+.1f}",
                    "–" if ft is None else f"{beats}/{len(kd)}",
                ]
            )
    return rows


BEST_COLUMNS = [
    "task",
    "teacher",
    "student",
    "params",
    "FT",
    "best KD (method)",
    "gain",
    "methods above FT",
]


def cells_csv(cells: Sequence[Cell]) -> str:
    """One CSV row per cell, plain numbers (scores as fractions)."""
    buf = io.StringIO()
    cols = [
        "task",
        "teacher",
        "student",
        "method",
        "metric",
        "n_seeds",
        "mean",
        "std",
        "teacher_score",
        "retention_pct",
        "student_params",
        "teacher_params",
        "params_pct",
        "gain_over_ft_points",
        "speedup_latency_b1",
        "throughput_ratio",
        "train_seconds",
        "seeds",
        "scores",
    ]
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(cols)
    for c in cells:
        writer.writerow(
            [
                c.task,
                c.teacher,
                c.student,
                c.method,
                c.metric,
                len(c.seeds),
                c.mean,
                c.std,
                c.teacher_score,
                c.retention,
                c.student_params,
                c.teacher_params,
                c.params_pct,
                c.gain_over_ft,
                c.speedup,
                c.throughput_ratio,
                c.train_seconds,
                " ".join(map(str, c.seeds)),
                " ".join(f"{s:.6f}" for s in c.scores),
            ]
        )
    return buf.getvalue()


def runs_csv(records: Sequence[RunRecord]) -> str:
    """One CSV row per run."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    cols = [
        "run_id",
        "task",
        "teacher",
        "student",
        "method",
        "seed",
        "status",
        "metric",
        "score",
        "teacher_score",
        "student_params",
        "train_seconds",
        "steps",
        "teacher_signal",
    ]
    writer.writerow(cols)
    for r in records:
        writer.writerow(
            [
                r.run_id,
                r.task,
                r.teacher,
                r.student,
                r.method,
                r.seed,
                r.status,
                r.metric,
                r.score,
                r.teacher_score,
                r.student_params,
                r.train_seconds,
                r.steps,
                r.teacher_signal,
            ]
        )
    return buf.getvalue()


def cell_dicts(cells: Sequence[Cell]) -> list[dict[str, Any]]:
    """Cells as plain data (for ``results.json``)."""
    return [asdict(c) for c in cells]
