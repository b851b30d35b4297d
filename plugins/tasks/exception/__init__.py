"""Built-in task ``exception``: CuBERT exception classification (20 exception types, top-1).

Reads CuBERT's JSONL (``function`` with ``__HOLE__`` where the ``except`` type was, string
``label``; :mod:`.format`) from ``data_dir``, a hub dataset, or the offline build from real
Python code (:mod:`.builder`, options :class:`ExceptionBuildOptions`). Metrics: ``top1``
(headline), ``top3``, ``macro_f1``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from pydantic import Field, field_validator

from kdkit.data.formats import Rows
from kdkit.data.metrics import multiclass_metrics
from kdkit.data.task import CodeTask, CodeTaskOptions, offline_option
from kdkit.hookspecs import hookimpl

from .builder import CUBERT_LABELS, ExceptionBuildOptions, build, resolve_labels
from .format import cubert_row, read_cubert


class ExceptionOptions(CodeTaskOptions):
    """Options of the ``exception`` task."""

    # The label set shapes both the build and the loading: the builder gets it too.
    labels: str | list[str] = Field(
        "cubert",
        description="'cubert' (CuBERT's 20 types), 'top-K' (K most frequent in train) or a list",
        json_schema_extra={"offline": "always"},
    )
    window: int | None = offline_option(ExceptionBuildOptions, "window")
    # Added with issue 18; `if_set` keeps the cache keys of configs that do not set them.
    window_tokens: int | None = offline_option(ExceptionBuildOptions, "window_tokens", if_set=True)
    window_before: float | None = offline_option(
        ExceptionBuildOptions, "window_before", if_set=True
    )
    keep_catch_alls: bool | None = offline_option(
        ExceptionBuildOptions, "keep_catch_alls", if_set=True
    )
    min_label_rows: int | None = offline_option(
        ExceptionBuildOptions, "min_label_rows", if_set=True
    )
    eval_share: float | None = offline_option(ExceptionBuildOptions, "eval_share", if_set=True)
    stratify: bool | None = offline_option(ExceptionBuildOptions, "stratify", if_set=True)
    holdout: bool | None = offline_option(ExceptionBuildOptions, "holdout", if_set=True)

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, value: Any) -> Any:
        if (
            isinstance(value, str)
            and value != "cubert"
            and not (value.startswith("top-") and value[4:].isdigit())
        ):
            raise ValueError("use 'cubert', 'top-K' (e.g. 'top-20') or a list of exception names")
        if isinstance(value, list) and len(set(value)) != len(value):
            raise ValueError("the label list has duplicates")
        return value


class ExceptionTask(CodeTask):
    """Exception-type classification of a function with one masked ``except`` type. Metrics:
    ``top1`` (headline), ``top3``, ``macro_f1``, ``accuracy`` (= top1), as fractions."""

    name = "exception"
    headline_metric = "top1"
    format_name = "CuBERT exception JSONL"
    reader = staticmethod(read_cubert)
    hub_row = staticmethod(cubert_row)
    metrics = staticmethod(multiclass_metrics)
    builder_options = ExceptionBuildOptions
    build_offline = staticmethod(build)

    options: ExceptionOptions

    def default_labels(self) -> Sequence[str]:
        labels = self.options.labels
        return (
            list(CUBERT_LABELS)
            if labels == "cubert"
            else labels
            if isinstance(labels, list)
            else []
        )

    def finish_rows(self, rows: Rows) -> Rows:
        if isinstance(self.options.labels, str) and self.options.labels.startswith("top-"):
            keep = self.options.keep_catch_alls
            if keep is None:
                keep = ExceptionBuildOptions.model_fields["keep_catch_alls"].default
            self.labels = resolve_labels(
                self.options.labels, Counter(r["label"] for r in rows["train"]), keep
            )
        ids = {name: i for i, name in enumerate(self.labels)}
        mapped: Rows = {}
        for split, items in rows.items():
            kept = [{**r, "label": ids[r["label"]]} for r in items if r["label"] in ids]
            if len(kept) < len(items):
                self.dropped[f"{split}_label_not_in_set"] = len(items) - len(kept)
            mapped[split] = kept
        return super().finish_rows(mapped)

    def load_options(self) -> dict[str, Any]:
        out = {**super().load_options(), "labels": self.options.labels}
        if self.options.keep_catch_alls is not None:  # unset: the fingerprint of older configs
            out["keep_catch_alls"] = self.options.keep_catch_alls
        return out


@hookimpl
def register_tasks(register):
    """Register the ``exception`` task."""
    register(
        "exception",
        ExceptionTask,
        config=ExceptionOptions,
        description="exception type of a masked except clause (CuBERT; 20 labels; top-1)",
    )
