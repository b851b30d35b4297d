"""Built-in task ``defect``: defect detection (Devign / CodeXGLUE; binary; accuracy).

Reads CodeXGLUE's Devign JSONL (``func``, ``target`` 0/1, ``idx``; :mod:`.format`) from
``data_dir``, a hub dataset (e.g. ``google/code_x_glue_cc_defect_detection``), or the offline build
of synthetic bugs in real Python functions (:mod:`.builder`, options :class:`DefectBuildOptions`).
Metrics: ``accuracy`` (headline), ``precision``, ``recall``, ``f1`` of the defective class.
"""

from __future__ import annotations

from collections.abc import Sequence

from kdkit.data.metrics import binary_metrics
from kdkit.data.task import CodeTask, CodeTaskOptions, offline_option
from kdkit.hookspecs import hookimpl

from .builder import DefectBuildOptions, build
from .format import devign_row, read_devign


class DefectOptions(CodeTaskOptions):
    """Options of the ``defect`` task (the offline ones are declared by the builder's options)."""

    kinds: list[str] = offline_option(DefectBuildOptions, "kinds")
    max_lines: int | None = offline_option(DefectBuildOptions, "max_lines", if_set=True)


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

    def default_labels(self) -> Sequence[str]:
        return ["correct", "defective"]


@hookimpl
def register_tasks(register):
    """Register the ``defect`` task."""
    register("defect", DefectTask, config=DefectOptions,
             description="is the function defective? (Devign/CodeXGLUE; binary; accuracy)")  # fmt: skip
