"""``kdkit report``: the study's tables, figures and page, from whatever run directories exist.

Writes into ``OUT`` (default ``STUDY_DIR/report``):

* ``report.md`` — the tables (per task and teacher; FT vs best KD; efficiency) and the figures;
* ``report.html`` — the same, self-contained (styles inline, figures embedded as data URIs);
* ``results.csv`` (one row per cell), ``runs.csv`` (one row per run), ``results.json`` (all of it);
* ``figures/score_vs_size.png``, ``figures/score_vs_speedup.png``.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kdkit.engine.persist import atomic_write_text
from kdkit.study.figures import score_vs_size, score_vs_speedup
from kdkit.study.html import render_html
from kdkit.study.results import RunRecord, collect, read_json, run_dirs, run_status
from kdkit.study.tables import (
    BEST_COLUMNS,
    TABLE_COLUMNS,
    Cell,
    TeacherScore,
    best_method_rows,
    build_cells,
    cell_dicts,
    cells_csv,
    fmt,
    fmt_params,
    groups,
    markdown_table,
    runs_csv,
    table_rows,
)

EFFICIENCY_FILE = "efficiency.json"


def shapes(cells: Sequence[Cell]) -> list[str]:
    """The study's findings, checked on these numbers (sentences with their counts)."""
    out = []
    kd = [c for c in cells if not c.baseline and c.gain_over_ft is not None]
    if kd:
        above = sum(c.gain_over_ft > 0 for c in kd)  # type: ignore[operator]
        out.append(f"KD above FT: {above} of {len(kd)} (task, teacher, student, method) cells "
                   f"(mean gain {statistics.fmean(c.gain_over_ft for c in kd):+.1f} points).")  # type: ignore[misc]  # fmt: skip
        grows = total = 0
        for _key, group in groups(kd):
            for family in {c.student_family for c in group}:
                for method in {c.method for c in group}:
                    pts = sorted((c for c in group if c.student_family == family and c.method == method),
                                 key=lambda c: c.student_params or 0)  # fmt: skip
                    if len(pts) >= 2:
                        total += 1
                        grows += pts[0].gain_over_ft > pts[-1].gain_over_ft  # type: ignore[operator]
        if total:
            out.append(f"Gain larger for the smallest student than for the largest: {grows} of "
                       f"{total} (task, teacher, family, method) series.")  # fmt: skip
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
        out.append(f"{task} / {teacher}: teacher {100 * score:.1f}, {margin:+.1f} points over "
                   f"the best FT student{note}.")  # fmt: skip
    # retention of a teacher no better than its FT students says nothing about distillation
    kept = [c for c in cells if c.retention is not None and c.params_pct is not None
            and margins.get((c.task, c.teacher), (0.0, 0.0))[1] > 0]  # fmt: skip
    if kept:
        best = max(kept, key=lambda c: c.retention / max(c.params_pct, 1e-9))  # type: ignore[operator]
        out.append(f"Best retention per parameter: {best.student} with {best.method} on {best.task} "
                   f"keeps {best.retention:.1f} % of the teacher with {best.params_pct:.1f} % of its "
                   "parameters.")  # fmt: skip
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


def efficiency_tables(eff: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of the inference and training-time tables of ``efficiency.json``."""
    tables = []
    models = eff.get("models") or []
    if models:
        teacher_lat = {(m["task"]): m.get("latency_ms") for m in models if m["kind"] == "teacher"}
        rows = []
        for m in models:
            t = teacher_lat.get(m["task"])
            speed = t / m["latency_ms"] if t and m.get("latency_ms") else None
            rows.append([m["task"], m["kind"], m["label"], fmt_params(m.get("parameters")),
                         str(m.get("seq_len", "–")), fmt((m.get("flops_per_example") or 0) / 1e9 or None, ".2f"),
                         fmt(m.get("latency_ms"), ".2f"), fmt(m.get("throughput"), ".0f"),
                         _memory(m.get("peak_memory_mb")), fmt(speed, ".1f", "x")])  # fmt: skip
        header = ["task", "kind", "model", "params", "seq len", "GFLOPs/example", "latency b=1 (ms)",
                  f"throughput b={models[0].get('throughput_batch', '?')} (ex/s)",
                  "peak memory (MB)", "speed-up"]  # fmt: skip
        tables.append(("Inference (one process, same inputs)", header, rows))
    training = eff.get("training") or []
    if training:
        rows = [[t["task"], t["student"], t["method"], t["signal"], str(t.get("steps_timed", "–")),
                 fmt(t.get("seconds_per_step"), ".3f"), str(t.get("steps_per_epoch", "–")),
                 fmt(t.get("seconds_per_epoch"), ".1f"), fmt(t.get("ratio_to_ft"), ".2f", "x")]
                for t in training]  # fmt: skip
        header = ["task", "student", "method", "teacher signal", "steps timed", "s/step",
                  "steps/epoch", "s/epoch (extrapolated)", "vs FT"]  # fmt: skip
        tables.append(("Training time per epoch", header, rows))
    return tables


def _notes(eff: dict[str, Any]) -> list[str]:
    notes = list(eff.get("notes") or [])
    if eff.get("device"):
        notes.insert(0, f"Measured on {eff['device']} ({eff.get('hardware', '')}), torch "
                        f"{eff.get('torch', '?')}, {eff.get('threads', '?')} threads.")  # fmt: skip
    return notes


def build_report(
    paths: Sequence[Path], out_dir: Path, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Collect runs, aggregate, draw, and return everything the renderers need."""
    records = collect(paths, log=log)
    study_dir = paths[0]
    manifest = read_json(study_dir / "study.json") or {}
    eff: dict[str, Any] = {}
    for p in paths:
        found = read_json(p / EFFICIENCY_FILE)
        if isinstance(found, dict):
            eff = found
            break
    cells, teachers = build_cells(records, eff, manifest.get("axes"))
    figures = {}
    for name, draw in (("score_vs_size", score_vs_size), ("score_vs_speedup", score_vs_speedup)):
        path = draw(cells, teachers, out_dir / "figures" / f"{name}.png")
        if path is not None:
            figures[name] = path
    expected = set(manifest.get("runs") or [])
    present = {r.run_id for r in records}
    unfinished = [r for r in records if r.status != "finished"]
    missing = sorted(expected - present)
    incomplete = {d.name: run_status(d) for d in run_dirs(paths) if d.name in missing}
    return {"name": manifest.get("name") or study_dir.name, "records": records, "cells": cells,
            "teachers": teachers, "efficiency": eff, "figures": figures, "missing": missing,
            "incomplete": incomplete, "unfinished": unfinished, "paths": [str(p) for p in paths]}  # fmt: skip


def render_markdown(rep: dict[str, Any], out_dir: Path) -> str:
    """The Markdown report (figure links relative to ``out_dir``)."""
    cells: list[Cell] = rep["cells"]
    teachers: dict[tuple[str, str], TeacherScore] = rep["teachers"]
    records: list[RunRecord] = rep["records"]
    seeds = sorted({r.seed for r in records if r.status == "finished"})
    n_done = sum(r.status == "finished" for r in records)
    lines = [f"# Study report: {rep['name']}", "",
             f"{n_done} finished runs read from {', '.join(rep['paths'])}; seeds {seeds}. "
             "Scores: the headline test metric of the best-on-validation student, in %, mean ± "
             "sample standard deviation over seeds. Retention: % of the teacher's own test score. "
             "Gain: points over FT with the same student. Speed-up: teacher latency / student "
             "latency at batch 1, measured in one process.", ""]  # fmt: skip
    found = shapes(cells)
    if found:
        lines += ["## Shapes", ""] + [f"- {s}" for s in found] + [""]
    best = best_method_rows(cells)
    if best:
        lines += [
            "## FT and the best KD method per student",
            "",
            markdown_table(BEST_COLUMNS, best),
            "",
        ]
    for (task, teacher), group in groups(cells):
        ts = teachers.get((task, teacher))
        head = f"## {task} — teacher {teacher}"
        if ts is not None:
            head += (
                f" (test {ts.metric} {100 * ts.score:.1f}, {fmt_params(ts.parameters)} params"
                + (f"; spread over runs {100 * ts.spread:.2f}" if ts.spread else "")
                + ")"
            )
        lines += [head, "", markdown_table(TABLE_COLUMNS, table_rows(group)), ""]
    for title, header, rows in efficiency_tables(rep["efficiency"]):
        lines += [f"## {title}", "", markdown_table(header, rows), ""]
    notes = _notes(rep["efficiency"])
    if notes:
        lines += [f"- {n}" for n in notes] + [""]
    for name, path in rep["figures"].items():
        lines += [f"![{name}]({path.relative_to(out_dir).as_posix()})", ""]
    if rep["missing"] or rep["unfinished"]:
        lines += ["## Not in the tables", ""]
        lines += [f"- {r.run_id}: {r.status}" for r in rep["unfinished"]]
        lines += [f"- {m}: {rep['incomplete'].get(m, 'not found')}" for m in rep["missing"]]
        lines.append("")
    return "\n".join(lines)


def write_report(*paths: str | Path, out_dir: str | Path | None = None,
                 log: Callable[[str], None] = print) -> Path:  # fmt: skip
    """Write the report of the study (merging every given study/run directory); returns ``OUT``."""
    dirs = [Path(p) for p in paths]
    out = Path(out_dir) if out_dir else dirs[0] / "report"
    out.mkdir(parents=True, exist_ok=True)
    rep = build_report(dirs, out, log)
    md = render_markdown(rep, out)
    atomic_write_text(out / "report.md", md + "\n")
    atomic_write_text(out / "report.html", render_html(rep, out))
    atomic_write_text(out / "results.csv", cells_csv(rep["cells"]))
    atomic_write_text(out / "runs.csv", runs_csv(rep["records"]))
    payload = {
        "name": rep["name"],
        "cells": cell_dicts(rep["cells"]),
        "teachers": [vars(t) for t in rep["teachers"].values()],
        "runs": [{**vars(r), "run_dir": str(r.run_dir)} for r in rep["records"]],
        "efficiency": rep["efficiency"],
        "shapes": shapes(rep["cells"]),
        "missing": rep["missing"],
    }
    atomic_write_text(out / "results.json", json.dumps(payload, indent=2, default=str) + "\n")
    return out
