"""Built-in task ``defect``: defect detection (Devign / CodeXGLUE; binary; accuracy).

Reads CodeXGLUE's Devign JSONL (``func``, ``target`` 0/1, ``idx``; :mod:`.format`) from
``data_dir``, a hub dataset (e.g. ``google/code_x_glue_cc_defect_detection``), or the offline build
of synthetic bugs in real Python functions (:mod:`.builder`, options :class:`DefectBuildOptions`).
Metrics: ``accuracy`` (headline), ``precision``, ``recall``, ``f1`` of the defective class.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from kdkit.data.formats import Rows
from kdkit.data.metrics import binary_metrics
from kdkit.data.task import CodeTask, CodeTaskOptions
from kdkit.hookspecs import hookimpl

from .builder import DefectBuildOptions, build
from .format import devign_row, read_devign


class DefectOptions(CodeTaskOptions):
    """Options of the ``defect`` task."""

    kinds: list[str] = Field(
        default_factory=lambda: ["variable_misuse", "swapped_operands", "wrong_operator"],
        description="offline build only: the synthetic bug kinds",
    )
    max_lines: int | None = Field(
        None, ge=3, description="offline build only: longest function kept, in lines (default 40)"
    )


class DefectTask(CodeTask):
    """Is this function defective? (0 = correct, 1 = defective)."""

    name = "defect"
    is_pair = False
    headline_metric = "accuracy"
    format_name = "Devign/CodeXGLUE defect JSONL"
    builder_options = DefectBuildOptions
    build_offline = staticmethod(build)

    def default_labels(self) -> Sequence[str]:
        return ["correct", "defective"]

    def offline_overrides(self) -> dict[str, Any]:
        extra = {} if self.options.max_lines is None else {"max_lines": self.options.max_lines}
        return {"kinds": list(self.options.kinds), **extra}

    def read_local(
        self, data_dir: Path, explicit: dict[str, str | None]
    ) -> tuple[Rows, list[Path]]:
        return read_devign(data_dir, explicit, self.build_hint)

    def convert_hub_row(self, obj: dict[str, Any], where: str) -> dict[str, Any]:
        return devign_row(obj, where)

    def evaluate(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """``accuracy`` (headline), ``precision``, ``recall``, ``f1`` (class 1), as fractions."""
        return binary_metrics(logits, labels)


@hookimpl
def register_tasks(register):
    """Register the ``defect`` task."""
    register("defect", DefectTask, config=DefectOptions,
             description="is the function defective? (Devign/CodeXGLUE; binary; accuracy)")  # fmt: skip
