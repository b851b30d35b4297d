"""``kdkit report``: the study's tables, figures and page, from whatever run directories exist.

Writes into ``OUT`` (default ``STUDY_DIR/report``):

* ``report.md`` — the tables (per task and teacher; FT vs best KD; efficiency) and the figures;
* ``report.html`` — the same, self-contained (styles inline, figures embedded as data URIs);
* ``results.csv`` (one row per cell), ``runs.csv`` (one row per run), ``baselines.csv`` (one row
  per task, split and baseline), ``results.json`` (all of it, the baselines per task included);
* ``figures/score_vs_size.png``, ``figures/score_vs_speedup.png``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kdkit.baselines import Baselines
from kdkit.engine.persist import atomic_write_text
from kdkit.integrity import write_manifest
from kdkit.study.baselines import baselines_csv, collect_baselines
from kdkit.study.figures import score_vs_size, score_vs_speedup
from kdkit.study.html import render_html
from kdkit.study.markdown import render_markdown
from kdkit.study.report_model import (
    StudyData,
    build_model,
    efficiency_notes,
    efficiency_tables,
    shapes,
    teacher_margins,
)
from kdkit.study.results import collect, from_results_json, read_json, run_dirs, run_status
from kdkit.study.tables import build_cells, cell_dicts, cells_csv, runs_csv

__all__ = [
    "build_report",
    "efficiency_notes",
    "efficiency_tables",
    "shapes",
    "teacher_margins",
    "write_report",
]

EFFICIENCY_FILE = "efficiency.json"


def build_report(
    paths: Sequence[Path], out_dir: Path, log: Callable[[str], None] = print
) -> StudyData:
    """Collect runs, aggregate, draw the figures into ``out_dir``: what the model is built from.

    A path that is a file is a report's ``results.json``: its runs (and their grid order,
    efficiency data and baselines) are read from it instead of from run directories.
    """
    shown = [str(p) for p in paths]
    study_dir = paths[0]
    if study_dir.is_file():
        records, stored = from_results_json(study_dir)
        manifest = {"name": stored["name"], "axes": stored["axes"]}
        eff: dict[str, Any] = stored["efficiency"]
        study_dir = study_dir.parent
        paths = [study_dir, *paths[1:]]
    else:
        records, stored = collect(paths, log=log), {"baselines": {}}
        manifest = read_json(study_dir / "study.json") or {}
        eff = {}
        for p in paths:
            found = read_json(p / EFFICIENCY_FILE)
            if isinstance(found, dict):
                eff = found
                break
    cells, teachers = build_cells(records, eff, manifest.get("axes"))
    baselines, notes = collect_baselines(records, paths)
    for task, entry in stored["baselines"].items():
        if task not in baselines:
            baselines[task] = Baselines.from_dict(entry)
            notes.pop(task, None)
    figures = {}
    for name, draw in (("score_vs_size", score_vs_size), ("score_vs_speedup", score_vs_speedup)):
        path = draw(cells, teachers, out_dir / "figures" / f"{name}.png", baselines)
        if path is not None:
            figures[name] = path
    expected = set(manifest.get("runs") or [])
    present = {r.run_id for r in records}
    missing = sorted(expected - present)
    return StudyData(
        name=manifest.get("name") or study_dir.name,
        paths=shown,
        records=records,
        cells=cells,
        teachers=teachers,
        efficiency=eff,
        figures=figures,
        missing=missing,
        incomplete={d.name: run_status(d) for d in run_dirs(paths) if d.name in missing},
        unfinished=[r for r in records if r.status != "finished"],
        baselines=baselines,
        baseline_notes=notes,
    )


def write_report(
    *paths: str | Path, out_dir: str | Path | None = None, log: Callable[[str], None] = print
) -> Path:
    """Write the report of the study (merging every given study/run directory); returns ``OUT``."""
    dirs = [Path(p) for p in paths]
    out = (
        Path(out_dir) if out_dir else (dirs[0].parent if dirs[0].is_file() else dirs[0] / "report")
    )
    out.mkdir(parents=True, exist_ok=True)
    data = build_report(dirs, out, log)
    model = build_model(data)  # built once; both pages render it
    atomic_write_text(out / "report.md", render_markdown(model, out) + "\n")
    atomic_write_text(out / "report.html", render_html(model))
    atomic_write_text(out / "results.csv", cells_csv(data.cells))
    atomic_write_text(out / "runs.csv", runs_csv(data.records))
    atomic_write_text(out / "baselines.csv", baselines_csv(data.baselines))
    payload = {
        "name": data.name,
        "cells": cell_dicts(data.cells),
        "teachers": [vars(t) for t in data.teachers.values()],
        "baselines": {task: b.to_dict() for task, b in data.baselines.items()},
        "baseline_notes": data.baseline_notes,
        "runs": [
            {**{k: v for k, v in vars(r).items() if k != "baselines"}, "run_dir": str(r.run_dir)}
            for r in data.records
        ],
        "efficiency": data.efficiency,
        "shapes": shapes(data.cells),
        "missing": data.missing,
    }
    atomic_write_text(out / "results.json", json.dumps(payload, indent=2, default=str) + "\n")
    write_manifest(out, "study report")  # results.json, the pages and figures, checked on reuse
    return out
