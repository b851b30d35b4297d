"""Built-in reporter ``wandb``: every scalar of the run logged to Weights & Biases.

Needs the ``wandb`` package (``pip install 'kdkit[wandb]'``). The mode follows W&B's own rules:
the ``mode`` option when set (``online``, ``offline``, ``disabled``), else ``WANDB_MODE`` from the
environment, else W&B's default (online, which needs ``wandb login``). ``WANDB_MODE=offline``
writes the run under ``RUN_DIR/wandb/offline-run-*`` for a later ``wandb sync``. The resolved run
config is the W&B run's config; scalars have the names of the ``tensorboard`` reporter
(``train/<term>``, ``<split>/<metric>``, ``summary/...``), each logged with the training step.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from kdkit.api import Options, Reporter, RunInfo
from kdkit.errors import KdkitError
from kdkit.hookspecs import hookimpl
from kdkit.plugins.reporters.scalars import eval_scalars, step_scalars, summary_scalars


class WandbOptions(Options):
    """Options of the W&B reporter."""

    project: str = Field("kdkit", description="W&B project")
    entity: str | None = Field(None, description="W&B entity (team or user); default: yours")
    name: str | None = Field(None, description="run name; default: the run directory's name")
    group: str | None = Field(None, description="W&B group (e.g. a study's name)")
    tags: list[str] = Field(default_factory=list, description="W&B tags")
    mode: Literal["online", "offline", "disabled"] | None = Field(
        None, description="W&B mode; default: WANDB_MODE from the environment, else online"
    )
    every: int = Field(1, ge=1, description="log one training step in this many")


def _wandb() -> Any:
    try:
        import wandb
    except ImportError as exc:
        raise KdkitError(
            "the wandb reporter needs the wandb package",
            where="reporters: wandb",
            fix="pip install 'kdkit[wandb]' (or pip install wandb), or drop the reporter",
        ) from exc
    return wandb


class WandbReporter(Reporter):
    """Starts a W&B run at ``start``, logs every step and evaluation, finishes it at the end."""

    def __init__(self, options: WandbOptions, context: Any = None) -> None:
        self.options = options
        self._wandb = _wandb()  # a missing extra fails before training
        self.run: Any = None

    def _log(self, scalars: Mapping[str, float], step: int) -> None:
        if self.run is not None and scalars:
            self.run.log(dict(scalars), step=step)

    def start(self, run: RunInfo) -> None:
        o = self.options
        self.run = self._wandb.init(
            project=o.project,
            entity=o.entity,
            group=o.group,
            tags=o.tags or None,
            name=o.name or os.path.basename(os.path.normpath(run.run_dir)),
            mode=o.mode,  # None: wandb reads WANDB_MODE itself
            dir=run.run_dir,
            config=dict(run.config),
            reinit="create_new",
        )

    def step(self, run: RunInfo, step: int, record: Mapping[str, float]) -> None:
        if step % self.options.every == 0:
            self._log(step_scalars(record), step)

    def evaluation(self, run: RunInfo, step: int, split: str, metrics: Mapping[str, float]) -> None:
        self._log(eval_scalars(split, metrics), step)

    def finish(self, run: RunInfo, summary: Mapping[str, Any]) -> None:
        if self.run is None:
            return
        self.run.summary.update(summary_scalars(summary))
        self.run.finish()
        self.run = None


@hookimpl
def register_reporters(register):
    register(
        "wandb",
        WandbReporter,
        config=WandbOptions,
        description="every scalar (loss terms, lr, throughput, metrics) to Weights & Biases; "
        "respects WANDB_MODE (extra: kdkit[wandb])",
    )
