"""Shared fixtures of the Python API tests: kdkit's plugins plus the engine tests' tiny ones."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def plugins():
    """kdkit's own plugins plus the tiny task and teacher (tests/engine/tinyplug.py)."""
    from kdkit.discovery import load_plugins
    from tests.engine import tinyplug

    return load_plugins(distributions={"kdkit"}, extra=[("tiny-test", tinyplug)])


#: The tiny run of the engine tests (tests/engine/conftest.py:tiny_config) as distill() sections.
TINY = dict(
    task="tiny",
    teacher="tiny-teacher",
    student={"name": "gru", "size": "0.6M", "vocab_size": 300, "hidden_size": 16},
    method={"name": "kd", "temperature": 2},
    training={"epochs": 2, "batch_size": 8, "lr": 0.003, "max_length": 64, "device": "cpu"},
)
