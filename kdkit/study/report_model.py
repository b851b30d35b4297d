"""The study report as one typed model, built once; the Markdown and HTML pages render it.

:func:`build_model` turns the collected runs (:class:`StudyData`) into a :class:`Report`: a
title, an introduction and an ordered list of :class:`Section` s, each with its paragraphs,
bullets (``note=True``: notes set in smaller type), tables and figures. The two renderers
(:func:`kdkit.study.markdown.render_markdown`, :func:`kdkit.study.html.render_html`) only lay
that model out, so they cannot differ in what they say or in which order.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdkit.baselines import Baselines
from kdkit.study.baselines import (
    BASELINE_COLUMNS,
    baseline_table_rows,
    majority_lines,
    margin_lines,
    trivial_mark,
)
from kdkit.study.results import RunRecord
from kdkit.study.tables import (
    BEST_COLUMNS,
    TABLE_COLUMNS,
    Cell,
    TeacherScore,
    best_method_rows,
    fmt,
    fmt_params,
    groups,
    table_rows,
)


@dataclass(frozen=True)
class Table:
    """A table of text cells."""

    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Figure:
    """A figure file (PNG) and its name (the image's alternative text)."""

    name: str
    path: Path


@dataclass(frozen=True)
class Section:
    """One part of the report, in the order it is shown.

    Attributes:
        title: the heading; ``None`` for a part without one (notes, figures).
        bullets: list items (findings, notes, runs left out).
        tables: tables, in order.
        figures: figures, in order.
        note: the bullets are notes (the HTML page sets them in smaller type).
    """

    title: str | None
    bullets: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    note: bool = False


@dataclass(frozen=True)
class Report:
    """The whole report: what both renderers show."""

    title: str
    intro: str
    sections: list[Section]


@dataclass
class StudyData:
    """What the report is built from: the runs found, aggregated, with their efficiency data.

    Attributes:
        name: the study's name.
        paths: the directories read.
        records: one record per run directory found.
        cells: runs aggregated per (task, teacher, student, method).
        teachers: each (task, teacher)'s own test score.
        efficiency: ``efficiency.json`` (inference and training-time measurements), or ``{}``.
        figures: figure name -> PNG path.
        missing: run ids the manifest expects but no directory holds.
        incomplete: run id -> status, for the missing runs whose directories exist.
        unfinished: records of runs that did not finish.
        baselines: task label -> its baselines on the runs' splits (from the runs' summaries or
            the study's ``baselines.json``).
        baseline_notes: task label -> why its baselines are unavailable.
    """

    name: str
    paths: list[str]
    records: list[RunRecord]
    cells: list[Cell]
    teachers: dict[tuple[str, str], TeacherScore]
    efficiency: dict[str, Any]
    figures: dict[str, Path]
    missing: list[str]
    incomplete: dict[str, str]
    unfinished: list[RunRecord]
    baselines: dict[str, Baselines] = field(default_factory=dict)
    baseline_notes: dict[str, str] = field(default_factory=dict)


def shapes(cells: Sequence[Cell]) -> list[str]:
    """The study's findings, checked on these numbers (sentences with their counts)."""
    out = []
    # (the ignores below: mypy does not carry this "is not None" filter into the uses)
    kd = [c for c in cells if not c.baseline and c.gain_over_ft is not None]
    if kd:
        above = sum(c.gain_over_ft > 0 for c in kd)  # type: ignore[operator]
        out.append(
            f"KD above FT: {above} of {len(kd)} (task, teacher, student, method) cells "
            f"(mean gain {statistics.fmean(c.gain_over_ft for c in kd):+.1f} points)."  # type: ignore[misc]
        )
        grows = total = 0
        for _key, group in groups(kd):
            for family in {c.student_family for c in group}:
                for method in {c.method for c in group}:
                    pts = sorted(
                        (c for c in group if c.student_family == family and c.method == method),
                        key=lambda c: c.student_params or 0,
                    )
                    if len(pts) >= 2:
                        total += 1
                        grows += pts[0].gain_over_ft > pts[-1].gain_over_ft  # type: ignore[operator]
        if total:
            out.append(
                f"Gain larger for the smallest student than for the largest: {grows} of "
                f"{total} (task, teacher, family, method) series."
            )
        for (task, teacher), group in groups(kd):
            wins: dict[str, int] = {}
            for student in dict.fromkeys(c.student for c in group):
                best = max((c for c in group if c.student == student), key=lambda c: c.mean)
                wins[best.method] = wins.get(best.method, 0) + 1
            ranking = ", ".join(
                f"{m} ({n})" for m, n in sorted(wins.items(), key=lambda kv: -kv[1])
            )
            out.append(f"{task} / {teacher}: best method per student — {ranking}.")
    margins = teacher_margins(cells, kd)
    for (task, teacher), (score, margin) in margins.items():
        note = "" if margin > 0 else " — no margin over its students: nothing for KD to pass on"
        out.append(
            f"{task} / {teacher}: teacher {100 * score:.1f}, {margin:+.1f} points over "
            f"the best FT student{note}."
        )
    # retention of a teacher no better than its FT students says nothing about distillation
    # (the ignore below: mypy does not carry this "is not None" filter into the key)
    kept = [
        c
        for c in cells
        if c.retention is not None
        and c.params_pct is not None
        and margins.get((c.task, c.teacher), (0.0, 0.0))[1] > 0
    ]
    if kept:
        best = max(kept, key=lambda c: c.retention / max(c.params_pct, 1e-9))  # type: ignore[operator,type-var]
        out.append(
            f"Best retention per parameter: {best.student} with {best.method} on {best.task} "
            f"keeps {best.retention:.1f} % of the teacher with {best.params_pct:.1f} % of its "
            "parameters."
        )
    return out


def teacher_margins(
    cells: Sequence[Cell], kd: Sequence[Cell]
) -> dict[tuple[str, str], tuple[float, float]]:
    """Per (task, teacher) of ``kd``: (the teacher's score, its points over the best FT student).

    Distillation can only pass on what the teacher knows beyond what the student learns alone; a
    teacher at or below its FT students has nothing to give, whatever the method. Groups without
    a teacher score or an FT cell are left out.
    """
    out = {}
    for (task, teacher), group in groups(kd):
        score = next((c.teacher_score for c in group if c.teacher_score is not None), None)
        ft = [c.mean for c in cells if c.baseline and c.task == task]
        if score is not None and ft:
            out[(task, teacher)] = (score, 100 * (score - max(ft)))
    return out


def _memory(mb: float | None) -> str:
    """Peak memory in MB; a rise below 0.1 MB (on CPU: no new pages from the OS, the pass fit in
    memory the process already held) is shown as ``< 0.1`` rather than a misleading 0.0."""
    return "< 0.1" if mb is not None and mb < 0.05 else fmt(mb, ".1f")


def efficiency_tables(eff: Mapping[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of the inference and training-time tables of ``efficiency.json``."""
    tables = []
    models = eff.get("models") or []
    if models:
        teacher_lat = {(m["task"]): m.get("latency_ms") for m in models if m["kind"] == "teacher"}
        rows = []
        for m in models:
            t = teacher_lat.get(m["task"])
            speed = t / m["latency_ms"] if t and m.get("latency_ms") else None
            rows.append(
                [
                    m["task"],
                    m["kind"],
                    m["label"],
                    fmt_params(m.get("parameters")),
                    str(m.get("seq_len", "–")),
                    fmt((m.get("flops_per_example") or 0) / 1e9 or None, ".2f"),
                    fmt(m.get("latency_ms"), ".2f"),
                    fmt(m.get("throughput"), ".0f"),
                    _memory(m.get("peak_memory_mb")),
                    fmt(speed, ".1f", "x"),
                ]
            )
        header = [
            "task",
            "kind",
            "model",
            "params",
            "seq len",
            "GFLOPs/example",
            "latency b=1 (ms)",
            f"throughput b={models[0].get('throughput_batch', '?')} (ex/s)",
            "peak memory (MB)",
            "speed-up",
        ]
        tables.append(("Inference (one process, same inputs)", header, rows))
        onnx = [m for m in models if m.get("onnxruntime_latency_ms") or m.get("onnx_error")]
        if onnx:  # efficiency.measure_onnx: the students' exported graphs (the onnx extra)
            rows = [
                [
                    m["task"],
                    m["label"],
                    fmt(m.get("latency_ms"), ".2f"),
                    fmt(m.get("onnxruntime_latency_ms"), ".2f"),
                    fmt(m.get("throughput"), ".0f"),
                    fmt(m.get("onnxruntime_throughput"), ".0f"),
                    fmt(m.get("onnx_max_abs_diff"), ".1e")
                    if not m.get("onnx_error")
                    else "export failed",
                ]
                for m in onnx
            ]
            header = [
                "task",
                "student",
                "PyTorch latency b=1 (ms)",
                "ONNX Runtime latency b=1 (ms)",
                "PyTorch throughput (ex/s)",
                "ONNX Runtime throughput (ex/s)",
                "max |logit diff|",
            ]
            tables.append(("ONNX Runtime beside PyTorch (CPU, same inputs)", header, rows))
    training = eff.get("training") or []
    if training:
        rows = [
            [
                t["task"],
                t["student"],
                t["method"],
                t["signal"],
                str(t.get("steps_timed", "–")),
                fmt(t.get("seconds_per_step"), ".3f"),
                str(t.get("steps_per_epoch", "–")),
                fmt(t.get("seconds_per_epoch"), ".1f"),
                fmt(t.get("ratio_to_ft"), ".2f", "x"),
            ]
            for t in training
        ]
        header = [
            "task",
            "student",
            "method",
            "teacher signal",
            "steps timed",
            "s/step",
            "steps/epoch",
            "s/epoch (extrapolated)",
            "vs FT",
        ]
        tables.append(("Training time per epoch", header, rows))
    return tables


def efficiency_notes(eff: Mapping[str, Any]) -> list[str]:
    """The efficiency measurements' notes, the machine they were measured on first."""
    notes = list(eff.get("notes") or [])
    if eff.get("device"):
        notes.insert(
            0,
            f"Measured on {eff['device']} ({eff.get('hardware', '')}), torch "
            f"{eff.get('torch', '?')}, {eff.get('threads', '?')} threads.",
        )
    return notes


def _intro(data: StudyData) -> str:
    seeds = sorted({r.seed for r in data.records if r.status == "finished"})
    n_done = sum(r.status == "finished" for r in data.records)
    return (
        f"{n_done} finished runs read from {', '.join(data.paths)}; seeds {seeds}. "
        "Scores: the headline test metric of the best-on-validation student, in %, mean ± "
        "sample standard deviation over seeds. Retention: % of the teacher's own test score. "
        "Gain: points over FT with the same student. Speed-up: teacher latency / student "
        "latency at batch 1, measured in one process."
    )


def _group_title(task: str, teacher: str, ts: TeacherScore | None) -> str:
    title = f"{task} — teacher {teacher}"
    if ts is not None:
        title += (
            f" (test {ts.metric} {100 * ts.score:.1f}, {fmt_params(ts.parameters)} params"
            + (f"; spread over runs {100 * ts.spread:.2f}" if ts.spread else "")
            + ")"
        )
    return title


def _group_rows(group: Sequence[Cell], b: Baselines | None) -> list[list[str]]:
    """The group's table rows, a score at the majority class (within one point) marked
    ``(= majority)``, one more than a point below it ``(< majority)``, one at the best constant
    prediction (not the majority class) ``(= always 'LABEL')``."""
    rows = table_rows(group)
    score = TABLE_COLUMNS.index("score")
    for row, cell in zip(rows, group):
        mark = trivial_mark(cell.mean, b)
        if mark:
            row[score] += f" ({mark})"
    return rows


def build_model(data: StudyData) -> Report:
    """The report's sections, in order: shapes; the baselines with the teachers' margins over
    them; FT and the best KD method; one table per task and teacher; the efficiency tables; their
    notes; the figures; the runs left out."""
    sections: list[Section] = []
    found = shapes(data.cells)
    if found:
        sections.append(Section("Shapes", bullets=found))
    base_rows = baseline_table_rows(data.baselines)
    bullets = margin_lines(data.baselines, data.teachers) + majority_lines(
        data.cells, data.baselines
    )
    bullets += [f"{task}: {note}" for task, note in data.baseline_notes.items()]
    if base_rows or bullets:
        sections.append(
            Section(
                "Baselines (test split, same metric; chosen on validation)",
                bullets=bullets,
                tables=[Table(BASELINE_COLUMNS, base_rows)] if base_rows else [],
            )
        )
    best = best_method_rows(data.cells)
    if best:
        sections.append(
            Section("FT and the best KD method per student", tables=[Table(BEST_COLUMNS, best)])
        )
    for (task, teacher), group in groups(data.cells):
        title = _group_title(task, teacher, data.teachers.get((task, teacher)))
        rows = _group_rows(group, data.baselines.get(task))
        sections.append(Section(title, tables=[Table(TABLE_COLUMNS, rows)]))
    for title, header, rows in efficiency_tables(data.efficiency):
        sections.append(Section(title, tables=[Table(header, rows)]))
    notes = efficiency_notes(data.efficiency)
    if notes:
        sections.append(Section(None, bullets=notes, note=True))
    if data.figures:
        sections.append(Section(None, figures=[Figure(n, p) for n, p in data.figures.items()]))
    left_out = [f"{r.run_id}: {r.status}" for r in data.unfinished]
    left_out += [f"{m}: {data.incomplete.get(m, 'not found')}" for m in data.missing]
    if left_out:
        sections.append(Section("Not in the tables", bullets=left_out))
    return Report(f"Study report: {data.name}", _intro(data), sections)
