"""An in-process plugin for engine tests: the tiny real-code task and the tiny frozen teacher."""

from __future__ import annotations

import os
import time

import torch

from kdkit.api import KDMethod, Needs, NoOptions, Options, Requirements
from kdkit.hookspecs import hookimpl
from kdkit.testing.tiny import TinyTask, TinyTeacher


@hookimpl
def register_tasks(register):
    register("tiny", lambda options, context: TinyTask(), config=NoOptions, description="tiny")


@hookimpl
def register_teachers(register):
    register(
        "tiny-teacher",
        lambda options, context: TinyTeacher(),
        config=NoOptions,
        description="tiny frozen teacher",
    )


class NaNOptions(Options):
    """Options of the test method ``nan-at``."""

    step: int = 3


class NaNAt(KDMethod):
    """Cross-entropy whose ``ce`` term turns NaN at a given training step (tests the guard)."""

    def __init__(self, options: NaNOptions, context) -> None:
        super().__init__()
        self.at = options.step
        self.calls = 0
        self.requirements = Requirements(student=Needs(), teacher=None)

    def forward(self, student, teacher, batch):
        self.calls += 1
        ce = torch.nn.functional.cross_entropy(student.logits, batch.labels)
        return {"ce": ce * float("nan") if self.calls == self.at else ce}


class StepCounter(KDMethod):
    """CE warmed up over the first half of training by ``batch.progress``; counts its steps in
    a buffer (saved with the weights) and the epochs it saw in :meth:`extra_state`.

    ``PROGRESS`` collects every ``(step, total_steps, epoch)`` it was given (for the tests).
    """

    requirements = Requirements(student=Needs(), teacher=None)
    PROGRESS: list[tuple[int, int, int]] = []

    def __init__(self, options, context) -> None:
        super().__init__()
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.epochs_seen: list[int] = []

    def forward(self, student, teacher, batch):
        p = batch.progress
        StepCounter.PROGRESS.append((p.step, p.total_steps, p.epoch))
        self.steps += 1
        if p.epoch not in self.epochs_seen:
            self.epochs_seen.append(p.epoch)
        warm = min(1.0, p.fraction / 0.5)  # the weight depends on the step: resume must match
        return {"ce": warm * torch.nn.functional.cross_entropy(student.logits, batch.labels)}

    def extra_state(self):
        return {"epochs_seen": list(self.epochs_seen)}

    def load_extra_state(self, state):
        self.epochs_seen = list(state["epochs_seen"])


@hookimpl
def register_kd_methods(register):
    register("nan-at", NaNAt, config=NaNOptions, description="NaN loss at a given step")
    register(
        "step-counter",
        StepCounter,
        config=NoOptions,
        description="counts steps in a buffer, warms up by batch.progress",
    )


@hookimpl
def on_step_end(run, step, record):
    """Slow each step down when ``KDKIT_TEST_STEP_SLEEP`` is set (so a test can kill mid-run)."""
    delay = float(os.environ.get("KDKIT_TEST_STEP_SLEEP", "0"))
    if delay:
        time.sleep(delay)
