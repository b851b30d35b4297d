"""Tiny real components for study tests, registered in-process next to the built-in methods.

The task, teacher and student are :mod:`kdkit.testing.tiny`'s (real stdlib code, CPU, ms per
step); methods and reporters are kdkit's own built-ins, so the grid machinery is tested against
the same registry lookups and option models a user's grid meets.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from pydantic import Field

from kdkit.api import Options
from kdkit.hookspecs import hookimpl

#: Built-in plugins the study tests load (entry-point names).
BUILTINS = ["ft", "kd", "dist", "pkd", "gru", "transformer", "console", "jsonl", "kernels"]
#: Tiny student sizes: name -> (layers, hidden).
TINY_SIZES = {"S": (1, 8), "M": (2, 16)}


class TinyStudentOptions(Options):
    size: str = Field("S", description="S or M")


class TinyTaskOptions(Options):
    max_train: int | None = Field(None, ge=1)


class StudyTinyPlugin:
    """``tiny`` task, ``tiny-teacher`` teacher and ``tiny-student`` student for tests."""

    @hookimpl
    def register_tasks(self, register):
        from kdkit.testing.tiny import TinyTask

        register("tiny", lambda o, c: TinyTask(), config=TinyTaskOptions, description="tiny task")

    @hookimpl
    def register_teachers(self, register):
        from kdkit.testing.tiny import TinyTeacher

        register("tiny-teacher", lambda o, c: TinyTeacher(), description="tiny teacher")

    @hookimpl
    def register_students(self, register):
        from kdkit.testing.tiny import TinyStudent

        def build(options, context):
            layers, hidden = TINY_SIZES[options.size]
            return TinyStudent(layers=layers, hidden=hidden)

        register("tiny-student", build, config=TinyStudentOptions, description="tiny student")


class Interrupter:
    """Raises ``KeyboardInterrupt`` after training step ``at_step`` (a user's Ctrl-C mid-run)."""

    at_step: int | None = None

    @hookimpl
    def on_step_end(self, run, step, record):
        if self.at_step is not None and step == self.at_step:
            self.at_step = None
            raise KeyboardInterrupt


@pytest.fixture(scope="session")
def interrupter() -> Interrupter:
    """The session's :class:`Interrupter` (disarmed unless a test sets ``at_step``)."""
    return Interrupter()


@pytest.fixture(scope="session")
def study_plugins(interrupter):
    """The loaded plugins (built-in methods/students/reporters + the tiny components)."""
    from kdkit.discovery import load_plugins

    return load_plugins(
        allow=BUILTINS, extra=[("study-tiny", StudyTinyPlugin()), ("interrupt", interrupter)]
    )


@pytest.fixture
def write_grid(tmp_path: Path):
    """Write a grid file (dedented YAML) into the test's folder and return its path."""

    def write(text: str, name: str = "grid.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return write


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Runs set ``torch.set_num_threads`` process-wide; give other tests their setting back."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
