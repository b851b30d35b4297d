"""Built-in reporter ``tensorboard``: every scalar of the run as TensorBoard event files.

Writes through ``torch.utils.tensorboard.SummaryWriter`` (needs the ``tensorboard`` package:
``pip install 'kdkit[tensorboard]'``) into ``RUN_DIR/tensorboard`` (option ``log_dir``); watch
a run with ``tensorboard --logdir RUN_DIR``. Names: ``train/<term>`` per step (loss terms,
``loss``, ``lr``, ``grad_norm``, ``examples_per_s``, ``epoch``), ``<split>/<metric>`` per
evaluation, ``summary/...`` at the end (see :mod:`kdkit.plugins.reporters.scalars`). A resumed run
appends a new event file to the same folder, and TensorBoard joins them by step.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from kdkit.api import Options, Reporter, RunInfo
from kdkit.errors import KdkitError
from kdkit.hookspecs import hookimpl
from kdkit.plugins.reporters.scalars import eval_scalars, step_scalars, summary_scalars


class TensorBoardOptions(Options):
    """Options of the TensorBoard reporter."""

    log_dir: str = Field(
        "tensorboard", description="event-file folder; relative paths are inside the run directory"
    )
    every: int = Field(1, ge=1, description="log one training step in this many")
    flush_secs: int = Field(30, ge=1, description="how often the writer flushes to disk")


def _summary_writer() -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:  # torch raises ImportError when tensorboard is absent
        raise KdkitError(
            f"the tensorboard reporter needs the tensorboard package ({exc})",
            where="reporters: tensorboard",
            fix="pip install 'kdkit[tensorboard]' (or pip install tensorboard), or drop the "
            "reporter",
        ) from exc
    return SummaryWriter


class TensorBoardReporter(Reporter):
    """Logs each step's record, each evaluation and the summary's numbers with their step."""

    def __init__(self, options: TensorBoardOptions, context: Any = None) -> None:
        self.options = options
        self._writer_class = _summary_writer()  # a missing extra fails before training
        self._writer: Any = None

    def _log(self, scalars: Mapping[str, float], step: int) -> None:
        if self._writer is None:
            return
        for tag, value in scalars.items():
            self._writer.add_scalar(tag, value, global_step=step)

    def start(self, run: RunInfo) -> None:
        log_dir = os.path.join(run.run_dir, os.path.expanduser(self.options.log_dir))
        self._writer = self._writer_class(log_dir=log_dir, flush_secs=self.options.flush_secs)
        self.log_dir = log_dir

    def step(self, run: RunInfo, step: int, record: Mapping[str, float]) -> None:
        if step % self.options.every == 0:
            self._log(step_scalars(record), step)

    def evaluation(self, run: RunInfo, step: int, split: str, metrics: Mapping[str, float]) -> None:
        self._log(eval_scalars(split, metrics), step)
        if self._writer is not None:
            self._writer.flush()  # evaluations are rare: make them visible at once

    def finish(self, run: RunInfo, summary: Mapping[str, Any]) -> None:
        self._log(summary_scalars(summary), int(summary.get("steps") or run.total_steps))
        if self._writer is not None:
            self._writer.close()
            self._writer = None


@hookimpl
def register_reporters(register):
    register(
        "tensorboard",
        TensorBoardReporter,
        config=TensorBoardOptions,
        description="every scalar (loss terms, lr, throughput, metrics) as TensorBoard "
        "event files in RUN_DIR/tensorboard (extra: kdkit[tensorboard])",
    )
