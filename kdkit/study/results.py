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
from pathlib import Path
from typing import Any

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
    out = []
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
        train = summary.get("train") if isinstance(summary.get("train"), dict) else summary
        secs, seen = train.get("train_seconds"), train.get("examples_seen")
        if isinstance(secs, (int, float)) and isinstance(seen, (int, float)) and seen > 0:
            return float(secs) / float(seen)
    rates = [r["examples_per_s"] for r in read_steps(run_dir)
             if isinstance(r.get("examples_per_s"), (int, float))
             and math.isfinite(r["examples_per_s"]) and r["examples_per_s"] > 0]  # fmt: skip
    if len(rates) > 1:
        rates = rates[1:]
    if not rates:
        return None
    rates.sort()
    return 1.0 / rates[len(rates) // 2]
