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


@pytest.fixture(scope="session")
def plugins():
    """kdkit's own plugins plus the tiny task and teacher."""
    from kdkit.discovery import load_plugins

    from . import tinyplug

    return load_plugins(distributions={"kdkit"}, extra=[("tiny-test", tinyplug)])


def tiny_config(plugins, run_dir, *overrides: str):
    """A resolved run over the tiny task: GRU student, tiny teacher, KD, 2 epochs, CPU."""
    from kdkit.config import apply_overrides, parse_yaml, validate

    text = f"""
seed: 3
output_dir: {run_dir}
task: tiny
teacher: tiny-teacher
student: {{name: gru, size: 0.6M, vocab_size: 300, hidden_size: 16}}
method: {{name: kd, temperature: 2}}
training: {{epochs: 2, batch_size: 8, lr: 0.003, max_length: 64, device: cpu}}
reporters: [jsonl]
"""
    doc = apply_overrides(parse_yaml(text, "tiny.yaml"), overrides)
    return validate(doc, plugins.registry)
