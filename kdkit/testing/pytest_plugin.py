"""pytest plugin (entry point ``pytest11 = kdkit``): fixtures for testing kdkit plugins."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from kdkit.api import Batch
from kdkit.testing.tiny import TinyStudent, TinyTask, TinyTeacher, tiny_batch

if TYPE_CHECKING:
    from kdkit.discovery import Plugins


@pytest.fixture
def kdkit_tiny_task() -> TinyTask:
    """A 3-class task over 48 real stdlib functions (32 train / 8 validation / 8 test)."""
    return TinyTask()


@pytest.fixture
def kdkit_tiny_teacher() -> TinyTeacher:
    """A frozen 4-layer tiny Transformer that tokenises words."""
    return TinyTeacher()


@pytest.fixture
def kdkit_tiny_student() -> TinyStudent:
    """A trainable 2-layer tiny Transformer that tokenises 3-character pieces."""
    return TinyStudent()


@pytest.fixture
def kdkit_tiny_batch(kdkit_tiny_teacher: TinyTeacher, kdkit_tiny_student: TinyStudent) -> Batch:
    """Six real functions tokenised by the tiny teacher and student (with padding)."""
    return tiny_batch(6, teacher=kdkit_tiny_teacher, student=kdkit_tiny_student)


@pytest.fixture
def kdkit_plugins() -> Plugins:
    """Plugins of the installed distributions, loaded afresh for the test.

    A :class:`kdkit.discovery.Plugins`: ``.registry`` (``get(kind, name)``, ``names(kind)``,
    ``collisions``), ``.failures``, ``.commands``, ``.origins`` and ``.pm`` (the pluggy manager).
    """
    from kdkit.discovery import load_plugins

    return load_plugins()
