"""The baselines of a study's tasks: from its runs' summaries, or computed from its grid.

Runs made by this version of kdkit store their task's baselines in ``summary.json``
(``baselines``); :func:`from_records` collects them, one per task label. Runs made before that
have none: :func:`grid_baselines` builds each task of the grid with the grid's options (the exact
splits the runs used: the same options give the same data fingerprint) and computes them (cached
with the data); :func:`write_baselines_file` stores them as ``baselines.json`` in the study
directory, where the report reads them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kdkit.baselines import Baselines
from kdkit.baselines.runs import RunBaselines, run_baselines
from kdkit.engine.persist import atomic_write_text

#: The file (in a study directory) that holds baselines computed after the runs.
BASELINES_FILE = "baselines.json"


def read_baselines_file(paths: Sequence[Path]) -> tuple[dict[str, Baselines], dict[str, str]]:
    """``baselines.json`` of the first of ``paths`` that has one: task label -> baselines, and
    task label -> note for the tasks whose baselines are unavailable."""
    for path in paths:
        try:
            data = json.loads((path / BASELINES_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        found, notes = {}, {}
        for task, entry in (data.get("tasks") or {}).items():
            if isinstance(entry, dict) and "splits" in entry:
                try:
                    found[task] = Baselines.from_dict(entry)
                except (KeyError, TypeError, ValueError):
                    notes[task] = f"baselines in {path / BASELINES_FILE} are unreadable"
            elif isinstance(entry, dict) and entry.get("unavailable"):
                notes[task] = str(entry["unavailable"])
        return found, notes
    return {}, {}


def grid_baselines(
    grid_path: str | Path, *, log: Callable[[str], None] = print, cache_dir: str | None = None
) -> dict[str, RunBaselines]:
    """Task label -> baselines of each task of the grid, on the splits its runs use.

    Each task is built through the registry with the options of its grid entry (the grid's base
    merged in, as the study's runs resolve it) and the run's cache directory, so the splits (and
    their fingerprint, which keys the baselines' cache) are the runs' own.
    """
    import torch

    from kdkit.api import BuildContext
    from kdkit.discovery import load_plugins
    from kdkit.engine.tokenization import default_cache_dir
    from kdkit.study.grid import load_grid
    from kdkit.study.resolve import plan

    plugins = load_plugins()
    runs = plan(load_grid(grid_path), plugins.registry)
    out: dict[str, RunBaselines] = {}
    for planned in runs:
        label = planned.point.values["task"].label
        if label in out:
            continue
        resolved = planned.resolved
        run = resolved.run
        cache = cache_dir or str(default_cache_dir(run.cache.dir))
        ctx = BuildContext(
            device=torch.device("cpu"),
            seed=run.seed,
            cache_dir=cache,
            max_length=run.training.max_length,
            extra={"progress": False},
        )
        comp = resolved.components["task"]
        log(f"kdkit: baselines of task {label} ...")
        task = comp.component.build(comp.options, ctx)
        got = run_baselines(task, cache, enabled=run.training.baselines)
        if got.baselines is not None:
            log(f"kdkit: {label}: {_one_line(got.baselines)} ({got.seconds:.0f} s)")
        else:
            log(f"kdkit: {label}: {got.note or 'baselines switched off'}")
        out[label] = got
    return out


def _one_line(b: Baselines, split: str = "test") -> str:
    s = b.splits[split].scores
    parts = [f"{k} {100 * v:.1f}" for k, v in s.items()]
    return f"{b.headline_metric} on {split}: " + ", ".join(parts)


def write_baselines_file(
    study_dir: str | Path, found: Mapping[str, RunBaselines], source: str | None = None
) -> Path:
    """Write ``STUDY_DIR/baselines.json`` (task label -> the summary entry of its baselines)."""
    path = Path(study_dir) / BASELINES_FILE
    payload: dict[str, Any] = {
        "source": source,
        "tasks": {k: v.summary_entry() for k, v in found.items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return path


# ----------------------------------------------------------------------------- in the report


def collect_baselines(
    records: Sequence[Any], paths: Sequence[Path]
) -> tuple[dict[str, Baselines], dict[str, str]]:
    """Task label -> baselines (and -> note where unavailable) of a study's runs.

    The runs' own summaries first (every run of a task stores the same baselines: they are keyed
    by the task's data fingerprint); ``baselines.json`` of the study directory fills the tasks
    whose runs predate them.
    """
    from kdkit.baselines.runs import from_summary

    found: dict[str, Baselines] = {}
    notes: dict[str, str] = {}
    for r in records:
        if r.task in found or not r.baselines:
            continue
        b = from_summary(r.baselines)
        if b is not None:
            found[r.task] = b
            notes.pop(r.task, None)
        elif r.baselines.get("unavailable"):
            notes.setdefault(r.task, str(r.baselines["unavailable"]))
    stored, stored_notes = read_baselines_file(paths)
    for task, b in stored.items():
        found.setdefault(task, b)
    for task, note in stored_notes.items():
        if task not in found:
            notes.setdefault(task, note)
    return found, notes


def at_majority(mean: float, b: Baselines | None, split: str = "test") -> bool:
    """Whether a score is at a trivial predictor (within :data:`STUDENT_MARGIN` of the majority
    class or of the best constant prediction, or below): the model has learnt nothing from its
    inputs."""
    from kdkit.baselines.runs import STUDENT_MARGIN

    return b is not None and split in b.splits and mean <= b.splits[split].trivial + STUDENT_MARGIN


def trivial_mark(mean: float, b: Baselines | None, split: str = "test") -> str | None:
    """The table mark of a score at a trivial predictor: ``= majority`` (within one point of the
    majority class), ``< majority`` (more than a point below it), ``= always 'LABEL'`` (at the
    best constant prediction, where that is not the majority class), ``< always 'LABEL'`` (more
    than a point below it, but above the majority class: e.g. an F1 score under "always
    positive"); ``None`` otherwise."""
    from kdkit.baselines.runs import STUDENT_MARGIN

    if b is None or not at_majority(mean, b, split):
        return None
    majority = b.score("majority", split)
    if mean <= majority + STUDENT_MARGIN:
        return "< majority" if mean < majority - STUDENT_MARGIN else "= majority"
    below = mean < b.splits[split].constant - STUDENT_MARGIN
    return f"{'<' if below else '='} always '{b.constant_label}'"


def _score_ci(b: Baselines, name: str, split: str = "test") -> str:
    s = b.splits[split]
    if name not in s.scores:
        return "–"
    lo, hi = s.ci[name]
    return f"{100 * s.scores[name]:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


BASELINE_COLUMNS = [
    "task",
    "metric",
    "test rows",
    "majority (label)",
    "best constant (label)",
    "stratified",
    "TF-IDF + LR [95 % CI]",
    "token Jaccard [95 % CI]",
    "lexical chosen on validation",
]


def baseline_table_rows(found: Mapping[str, Baselines], split: str = "test") -> list[list[str]]:
    """One row per task: the baselines' scores on ``split`` (percent, with 95 % intervals)."""
    rows = []
    for task, b in found.items():
        if split not in b.splits:
            continue
        s = b.splits[split]
        tuned = b.tuned.get(b.best_lexical, {})
        chosen = ", ".join(
            f"{k}={v}" for k, v in tuned.items() if k not in ("val_score", "tried", "train_rows")
        )
        rows.append(
            [
                task,
                b.headline_metric,
                str(s.rows),
                f"{100 * s.majority:.1f} ({b.majority_label})",
                # "–" for baselines computed before the best constant existed (version < 3)
                f"{100 * s.scores['constant']:.1f} ({b.constant_label})"
                if "constant" in s.scores
                else "–",
                f"{100 * s.stratified:.1f}",
                _score_ci(b, "tfidf_lr", split),
                _score_ci(b, "jaccard", split),
                f"{b.best_lexical}: {chosen}",
            ]
        )
    return rows


def margin_lines(
    found: Mapping[str, Baselines], teachers: Mapping[tuple[str, str], Any], split: str = "test"
) -> list[str]:
    """Per (task, teacher): its score against the best lexical baseline, flagged in words when
    it is not above it."""
    from kdkit.baselines import NAMES, verdict

    out = []
    for (task, teacher), ts in teachers.items():
        b = found.get(task)
        if b is None or split not in b.splits:
            continue
        lexical = b.lexical_score(split)
        line = (
            f"{task} / {teacher}: teacher {100 * ts.score:.1f} vs {NAMES[b.best_lexical]} "
            f"{100 * lexical:.1f} ({100 * (ts.score - lexical):+.1f} points) and majority "
            f"class {100 * b.score('majority', split):.1f}"
        )
        if b.constant_label != b.majority_label:
            line += f" (always '{b.constant_label}': {100 * b.splits[split].constant:.1f})"
        flag = verdict(ts.score, b, role="teacher", split=split)
        out.append(line + (f" — {flag.split(' (')[0]}." if flag else "."))
    return out


def majority_lines(cells: Sequence[Any], found: Mapping[str, Baselines]) -> list[str]:
    """Per task: how many of its (teacher, student, method) cells score at the majority class."""
    out = []
    for task in dict.fromkeys(c.task for c in cells):
        b = found.get(task)
        mine = [c for c in cells if c.task == task]
        if b is None or "test" not in b.splits:
            continue
        stuck = [c for c in mine if at_majority(c.mean, b)]
        if stuck:
            every = (
                " — every cell: nothing here shows a method's effect"
                if len(stuck) == len(mine)
                else ""
            )
            constant = (
                f"; or at the best constant prediction, always '{b.constant_label}' "
                f"({100 * b.splits['test'].constant:.1f}): '= always '{b.constant_label}'', lower: "
                f"'< always '{b.constant_label}''"
                if b.constant_label != b.majority_label
                else ""
            )
            out.append(
                f"{task}: {len(stuck)} of {len(mine)} cells at or below the majority "
                f"class ({100 * b.score('majority'):.1f}, '{b.majority_label}'; within 1 "
                f"point: '= majority' in the tables, lower: '< majority'{constant}){every}."
            )
    return out


def baselines_csv(found: Mapping[str, Baselines]) -> str:
    """One CSV row per (task, split, baseline): score and 95 % interval (fractions)."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(
        [
            "task",
            "split",
            "baseline",
            "metric",
            "score",
            "ci_low",
            "ci_high",
            "rows",
            "chosen_on_validation",
        ]
    )
    for task, b in found.items():
        for split, s in b.splits.items():
            for name, score in s.scores.items():
                lo, hi = s.ci.get(name, (None, None))
                tuned = {k: v for k, v in b.tuned.get(name, {}).items() if k != "tried"}
                writer.writerow(
                    [
                        task,
                        split,
                        name,
                        b.headline_metric,
                        score,
                        lo,
                        hi,
                        s.rows,
                        json.dumps(tuned, sort_keys=True) if tuned else "",
                    ]
                )
    return buf.getvalue()
