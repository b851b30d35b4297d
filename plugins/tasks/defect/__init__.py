"""Built-in task ``defect``: defect detection (Devign / CodeXGLUE; binary; accuracy).

Reads CodeXGLUE's Devign JSONL (``func``, ``target`` 0/1, ``idx``; :mod:`.format`) from
``data_dir``, a hub dataset (e.g. ``google/code_x_glue_cc_defect_detection``), or the offline build
of synthetic bugs in real Python functions (:mod:`.builder`, options :class:`DefectBuildOptions`).
Metrics: ``accuracy`` (headline), ``precision``, ``recall``, ``f1`` of the defective class.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from kdkit.data.formats import Rows
from kdkit.data.metrics import binary_metrics
from kdkit.data.task import CodeTask, CodeTaskOptions, offline_option
from kdkit.hookspecs import hookimpl

from .builder import DefectBuildOptions, build
from .format import devign_row, read_devign


class DefectOptions(CodeTaskOptions):
    """Options of the ``defect`` task (the offline ones are declared by the builder's options)."""

    kinds: list[str] = offline_option(DefectBuildOptions, "kinds")
    max_lines: int | None = offline_option(DefectBuildOptions, "max_lines", if_set=True)
    holdout: bool | None = offline_option(DefectBuildOptions, "holdout", if_set=True)


class DefectTask(CodeTask):
    """Is this function defective? (0 = correct, 1 = defective). Metrics: ``accuracy``
    (headline), ``precision``, ``recall``, ``f1`` (class 1), as fractions."""

    name = "defect"
    headline_metric = "accuracy"
    format_name = "Devign/CodeXGLUE defect JSONL"
    reader = staticmethod(read_devign)
    hub_row = staticmethod(devign_row)
    metrics = staticmethod(binary_metrics)
    builder_options = DefectBuildOptions
    build_offline = staticmethod(build)
    build_version = 2  # 2: no repeated text in a build

    def default_labels(self) -> Sequence[str]:
        return ["correct", "defective"]

    def finish_rows(self, rows: Rows) -> Rows:
        """``max_train`` / ``max_eval`` subsample whole *pairs* (a function and its mutant,
        rows sharing ``pair``) where the rows have one, so the classes stay balanced and a
        model cannot tell the label from which half of a pair is missing."""
        o = self.options
        caps = {"train": o.max_train, "validation": o.max_eval, "test": o.max_eval}
        return {s: subsample_pairs(rows[s], caps[s], o.sample_seed) for s in rows}

    def load_options(self) -> dict[str, Any]:
        # "pairs": the subsample keeps pairs (a new fingerprint for capped splits, issue 18).
        return {**super().load_options(), "subsample": "pairs"}


def subsample_pairs(rows: list[dict[str, Any]], k: int | None, seed: int) -> list[dict[str, Any]]:
    """At most ``k`` rows, drawn as whole units (rows sharing ``pair``; a row without one is its
    own unit), seeded, in the original order. Units are taken in a seeded order while they fit."""
    if k is None or len(rows) <= k:
        return rows
    units: dict[Any, list[int]] = {}
    for i, r in enumerate(rows):
        units.setdefault(r.get("pair", ("row", i)), []).append(i)
    order = list(units.values())
    random.Random(seed).shuffle(order)
    keep: list[int] = []
    for members in order:
        if len(keep) + len(members) <= k:
            keep.extend(members)
        if len(keep) == k:
            break
    return [rows[i] for i in sorted(keep)]


@hookimpl
def register_tasks(register):
    """Register the ``defect`` task."""
    register(
        "defect",
        DefectTask,
        config=DefectOptions,
        description="is the function defective? (Devign/CodeXGLUE; binary; accuracy)",
    )
