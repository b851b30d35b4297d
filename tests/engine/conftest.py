"""Shared fixtures of the engine tests: the tiny real-code task and a private cache dir."""

from __future__ import annotations

import pytest

from kdkit.api import BuildContext
from kdkit.testing.tiny import TinyTask


@pytest.fixture(scope="session")
def tiny_splits():
    """The tiny task and its splits (48 real stdlib functions, 3 labels)."""
    task = TinyTask()
    return task, task.load()


@pytest.fixture
def tiny_context(tiny_splits, tmp_path) -> BuildContext:
    """A build context over the tiny task with a per-test cache directory."""
    task, splits = tiny_splits
    return BuildContext(task=task, splits=splits, cache_dir=str(tmp_path / "cache"), max_length=64)
