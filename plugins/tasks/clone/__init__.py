"""Built-in task ``clone``: clone detection (BigCloneBench / CodeXGLUE; pairs; binary F1).

Reads BigCloneBench as CodeXGLUE ships it (``data.jsonl`` with ``idx``/``func`` and
``train.txt``/``valid.txt``/``test.txt`` with ``idx1 idx2 label``), a simple pair JSONL
(``func1``, ``func2``, ``target``; both in :mod:`.format`), a hub dataset (e.g.
``google/code_x_glue_cc_clone_detection_big_clone_bench``) or the offline build (:mod:`.builder`
with :mod:`.rewrites`, options :class:`CloneBuildOptions`). Each example is a pair, encoded as one
sentence-pair sequence.
Metrics: ``f1`` (headline), ``accuracy``, ``precision``, ``recall``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import Field

from kdkit.data.formats import Rows
from kdkit.data.metrics import binary_metrics
from kdkit.data.task import CodeTask, CodeTaskOptions, offline_option, subsample
from kdkit.hookspecs import hookimpl

from .builder import CloneBuildOptions, build
from .format import pair_row, read_bigclonebench


class CloneOptions(CodeTaskOptions):
    """Options of the ``clone`` task."""

    train_fraction: float = Field(
        1.0, gt=0, le=1, description="seeded share of training pairs kept (the study uses 0.1)"
    )
    validation_fraction: float = Field(
        1.0, gt=0, le=1, description="seeded share of validation pairs kept (the study uses 0.1)"
    )
    near_miss_share: float = offline_option(CloneBuildOptions, "near_miss_share")
    max_lines: int | None = offline_option(CloneBuildOptions, "max_lines", if_set=True)
    holdout: bool | None = offline_option(CloneBuildOptions, "holdout", if_set=True)


class CloneTask(CodeTask):
    """Do two functions implement the same functionality? (0 = different, 1 = clone). Metrics:
    ``f1`` (headline), ``accuracy``, ``precision``, ``recall`` (class 1), as fractions."""

    name = "clone"
    is_pair = True
    headline_metric = "f1"
    format_name = "BigCloneBench / CodeXGLUE clone detection"
    reader = staticmethod(read_bigclonebench)
    hub_row = staticmethod(pair_row)
    metrics = staticmethod(binary_metrics)
    builder_options = CloneBuildOptions
    build_offline = staticmethod(build)

    def default_labels(self) -> Sequence[str]:
        return ["different", "clone"]

    def finish_rows(self, rows: Rows) -> Rows:
        o = self.options
        rows = {
            "train": subsample(rows["train"], None, o.train_fraction, o.sample_seed),
            "validation": subsample(rows["validation"], None, o.validation_fraction, o.sample_seed),
            "test": rows["test"],
        }
        return super().finish_rows(rows)

    def load_options(self) -> dict[str, Any]:
        o = self.options
        return {
            **super().load_options(),
            "train_fraction": o.train_fraction,
            "validation_fraction": o.validation_fraction,
        }


@hookimpl
def register_tasks(register):
    """Register the ``clone`` task."""
    register(
        "clone",
        CloneTask,
        config=CloneOptions,
        description="are two functions clones? (BigCloneBench/CodeXGLUE; pairs; F1)",
    )
