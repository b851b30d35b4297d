"""What ``kdkit study --dry-run`` prints: the runs, their sizes in steps, and an estimated cost.

The cost of a run is counted exactly where the configuration decides it — optimisation steps and
training examples processed (``epochs x rows``, capped by ``max_steps``) — and converted to time
only from measurements: seconds per training example of runs of the same student and method that
already ran in this study directory (complete or partial, possibly copied from another machine).
Without a measurement the time is shown as unknown rather than guessed; run one seed of the grid
(``--max-runs``) and dry-run again to get one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kdkit.study.resolve import PlannedRun
from kdkit.study.results import measured_seconds_per_example, run_status


@dataclass
class RunEstimate:
    """The planned size and estimated time of one run."""

    run: PlannedRun
    status: str
    train_rows: int | None
    steps: int | None
    examples: int | None
    seconds: float | None
    basis: str


def train_rows(run: PlannedRun) -> int | None:
    """Training rows of a run: ``max_train`` (a cap: an upper bound) or the task's ``train_size``."""
    options = run.resolved.components["task"].options
    cap = getattr(options, "max_train", None)
    hint = run.point.values["task"].hints.get("train_size")
    if cap is not None and hint is not None:
        return min(int(cap), int(hint))
    return int(cap) if cap is not None else (int(hint) if hint is not None else None)


def run_steps(run: PlannedRun, rows: int | None) -> tuple[int | None, int | None]:
    """(optimisation steps, training examples processed) of a run with ``rows`` training rows."""
    cfg = run.resolved.run.training
    if rows is None:
        return (cfg.max_steps, cfg.max_steps * cfg.batch_size) if cfg.max_steps else (None, None)
    per_epoch = math.ceil(rows / cfg.batch_size)
    steps = per_epoch * cfg.epochs
    examples = rows * cfg.epochs
    if cfg.max_steps is not None and cfg.max_steps < steps:
        examples = round(examples * cfg.max_steps / steps)
        steps = cfg.max_steps
    return steps, examples


def estimate(
    runs: Sequence[PlannedRun], measured: Mapping[tuple[str, str], float]
) -> list[RunEstimate]:
    """Estimates for ``runs``; ``measured`` maps (student label, method label) -> s/example."""
    out = []
    for run in runs:
        rows = train_rows(run)
        steps, examples = run_steps(run, rows)
        labels = run.point.labels()
        per_ex = measured.get((labels["student"], labels["method"]))
        seconds = per_ex * examples if per_ex is not None and examples is not None else None
        basis = "measured" if seconds is not None else "unknown"
        out.append(RunEstimate(run, run_status(run.run_dir), rows, steps, examples, seconds, basis))
    return out


def measured_rates(study_dir: Path, runs: Sequence[PlannedRun]) -> dict[tuple[str, str], float]:
    """Seconds per training example by (student, method) from runs that already trained."""
    acc: dict[tuple[str, str], list[float]] = {}
    for run in runs:
        rate = measured_seconds_per_example(run.run_dir)
        if rate is not None:
            lab = run.point.labels()
            acc.setdefault((lab["student"], lab["method"]), []).append(rate)
    return {k: sum(v) / len(v) for k, v in acc.items()}


def _fmt_seconds(s: float | None) -> str:
    if s is None:
        return "?"
    if s < 90:
        return f"{s:.0f}s"
    if s < 5400:
        return f"{s / 60:.1f}min"
    return f"{s / 3600:.2f}h"


def render_dry_run(estimates: Sequence[RunEstimate], header: str, workers: int = 1) -> str:
    """The dry-run listing: one line per run, then totals (remaining work only).

    With ``workers > 1`` the wall-clock time is the total divided by ``workers`` (runs are dealt
    round-robin, so shards get equal shares of every student and method).
    """
    lines = [header, f"{'status':<9} {'steps':>7} {'examples':>9} {'est.':>8}  run"]
    for e in estimates:
        lines.append(
            f"{e.status:<9} {e.steps if e.steps is not None else '?':>7} "
            f"{e.examples if e.examples is not None else '?':>9} {_fmt_seconds(e.seconds):>8}  "
            f"{e.run.run_id}"
        )
    todo = [e for e in estimates if e.status != "complete"]
    known = [e.seconds for e in todo if e.seconds is not None]
    steps = sum(e.steps or 0 for e in todo)
    lines.append(
        f"{len(estimates)} runs: {len(estimates) - len(todo)} complete, {len(todo)} to run "
        f"({steps} steps{'' if all(e.steps is not None for e in todo) else ' + unknown'})"
    )
    if todo:
        if len(known) == len(todo):
            total = sum(known)
            wall = f", about {_fmt_seconds(total / workers)} on {workers} workers"
            wall = wall if workers > 1 else ""
            lines.append(
                f"estimated time of the remaining runs: {_fmt_seconds(total)}{wall} "
                "(from the measured speed of runs of the same student and method; "
                "teachers still to train are not counted)"
            )
        else:
            lines.append(
                f"estimated time: {_fmt_seconds(sum(known)) if known else '?'} for the "
                f"{len(known)} runs with a measured speed; {len(todo) - len(known)} have none yet "
                "(run a few, e.g. --max-runs 2, then dry-run again)"
            )
    return "\n".join(lines)
