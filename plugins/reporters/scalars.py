"""The scalars a run's events carry, named as the TensorBoard and W&B reporters log them.

Shared by the two reporters so both log the same names: a training step's record (loss terms,
``loss``, ``lr``, ``grad_norm``, ``examples_per_s``, ``epoch``) as ``train/<key>``, an evaluation
as ``<split>/<metric>`` (``validation/f1``), and the summary's numbers (``steps``,
``train_seconds``, ``test``'s metrics ...) as ``summary/<key>`` or ``summary/<key>/<sub-key>``.
Non-numeric values (names, the table, paths) are left out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def step_scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """``train/<key>`` for every number of one step's record."""
    return {f"train/{k}": x for k, v in record.items() if (x := _number(v)) is not None}


def eval_scalars(split: str, metrics: Mapping[str, Any]) -> dict[str, float]:
    """``<split>/<metric>`` for every number of one evaluation."""
    return {f"{split}/{k}": x for k, v in metrics.items() if (x := _number(v)) is not None}


def summary_scalars(summary: Mapping[str, Any]) -> dict[str, float]:
    """``summary/<key>`` (and one level down, ``summary/<key>/<sub>``) for the summary's finite
    numbers."""
    out: dict[str, float] = {}
    for key, value in summary.items():
        if isinstance(value, Mapping):
            for sub, inner in value.items():
                if (x := _number(inner)) is not None and math.isfinite(x):
                    out[f"summary/{key}/{sub}"] = x
        elif (x := _number(value)) is not None and math.isfinite(x):
            out[f"summary/{key}"] = x
    return out
