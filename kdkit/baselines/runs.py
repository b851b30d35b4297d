"""Baselines as a run records them: computed (or read from the cache) for the run's task, timed,
or a one-line note saying why they are unavailable.

A run must never fail because its baselines cannot be computed (a task whose splits are too small
to tune on, labels missing from train): :func:`run_baselines` turns the baselines' ``KdkitError``
into a note, and the run goes on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from kdkit.errors import KdkitError

from .compute import BaselineOptions, compute_baselines, default_workers
from .result import Baselines, verdict

#: A student within this many points (absolute, fractions) of the majority class is flagged as
#: "at the majority class". One point: on the default test split (284 rows) that is under three
#: rows — a student that differs from the constant answer by so little has learnt nothing.
STUDENT_MARGIN = 0.01

#: The options a run computes its baselines with (the documented defaults of
#: :class:`BaselineOptions`; tests swap in a smaller grid).
RUN_OPTIONS = BaselineOptions()


@dataclass
class RunBaselines:
    """What a run knows about its task's baselines.

    Attributes:
        baselines: the computed baselines, or ``None`` when unavailable or switched off.
        note: why they are unavailable (one line), ``None`` when they are available.
        seconds: wall time spent getting them (the computation, or the cache read).
        enabled: ``False`` when the run switched them off (``training.baselines: false``).
    """

    baselines: Baselines | None
    note: str | None
    seconds: float
    enabled: bool = True

    def summary_entry(self) -> dict[str, Any]:
        """The ``baselines`` value of ``summary.json``: the baselines' JSON plus ``from_cache``
        and ``seconds`` — or ``{"unavailable": note}`` / ``{"disabled": True}``."""
        if not self.enabled:
            return {"disabled": True}
        if self.baselines is None:
            return {"unavailable": self.note, "seconds": round(self.seconds, 3)}
        return {
            **self.baselines.to_dict(),
            "from_cache": self.baselines.from_cache,
            "lookup_seconds": round(self.seconds, 3),
        }


def unavailable_note(exc: KdkitError) -> str:
    """``baselines unavailable: <what> (<where>); fix: <fix>`` on one line."""
    where = f" ({exc.where})" if getattr(exc, "where", None) else ""
    fix = f"; fix: {exc.fix}" if getattr(exc, "fix", None) else ""
    return f"baselines unavailable: {exc.what}{where}{fix}"


def run_baselines(
    task: Any,
    cache_dir: str | None,
    *,
    enabled: bool = True,
    options: BaselineOptions | None = None,
    workers: int | None = None,
) -> RunBaselines:
    """The baselines of ``task`` (cached with its data), or a note saying why there are none.

    ``workers``: processes for the lexical grid; by default
    :func:`~kdkit.baselines.compute.default_workers` (``KDKIT_BASELINE_WORKERS``, else 1),
    at most the run's torch CPU threads (a run limited to one thread, e.g. a study worker beside
    others, stays on one core).

    Never raises for a task whose data cannot carry baselines (too few rows or labels to tune on,
    a label that train never shows, missing columns): those become :attr:`RunBaselines.note`.
    """
    if not enabled:
        return RunBaselines(None, None, 0.0, enabled=False)
    start = time.perf_counter()
    try:
        if workers is None:
            workers = min(default_workers(), torch.get_num_threads())
        found = compute_baselines(
            task, cache_dir=cache_dir, options=options or RUN_OPTIONS, workers=workers
        )
    except KdkitError as exc:
        return RunBaselines(None, unavailable_note(exc), time.perf_counter() - start)
    except Exception as exc:
        # An unexpected failure (a bug, a library error) must not lose a run that has trained:
        # it becomes the note, with the exception's type, and the run's summary is written.
        note = f"baselines unavailable: {type(exc).__name__}: {exc}".splitlines()[0]
        return RunBaselines(None, note, time.perf_counter() - start)
    return RunBaselines(found, None, time.perf_counter() - start)


def from_summary(entry: Any) -> Baselines | None:
    """The :class:`Baselines` stored in a summary's ``baselines`` value (``None`` when it holds
    none: unavailable, disabled, absent or unreadable)."""
    if not isinstance(entry, dict) or "splits" not in entry:
        return None
    try:
        return Baselines.from_dict(entry, from_cache=bool(entry.get("from_cache")))
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def flags(
    baselines: Baselines | None,
    teacher: float | None,
    students: dict[str, float],
    split: str = "test",
) -> list[str]:
    """The flag texts of a teacher below the lexical baseline and of students at the majority
    class (``students``: row name -> headline score), each prefixed with the model it is about."""
    if baselines is None or split not in baselines.splits:
        return []
    out = []
    if teacher is not None:
        text = verdict(teacher, baselines, role="teacher", split=split)
        if text:
            out.append(f"warning: {text}.")
    for name, score in students.items():
        text = verdict(score, baselines, role="student", split=split, margin=STUDENT_MARGIN)
        if text:
            out.append(f"warning: {name}: {text}.")
    return out
