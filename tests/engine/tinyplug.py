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
    register("tiny-teacher", lambda options, context: TinyTeacher(), config=NoOptions,
             description="tiny frozen teacher")  # fmt: skip


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


@hookimpl
def register_kd_methods(register):
    register("nan-at", NaNAt, config=NaNOptions, description="NaN loss at a given step")


@hookimpl
def on_step_end(run, step, record):
    """Slow each step down when ``KDKIT_TEST_STEP_SLEEP`` is set (so a test can kill mid-run)."""
    delay = float(os.environ.get("KDKIT_TEST_STEP_SLEEP", "0"))
    if delay:
        time.sleep(delay)
