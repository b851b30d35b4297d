"""Shared helpers for core tests: in-process components and fake installed distributions."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from pydantic import Field

from kdkit.api import Options
from kdkit.hookspecs import hookimpl


class KDOptions(Options):
    temperature: float = Field(4.0, gt=0, description="softmax temperature")
    alpha: float = Field(0.5, ge=0, le=1)


class TaskOptions(Options):
    source: list[str] = ["stdlib"]


class CorePlugin:
    """An in-process plugin with one component of each kind the config needs."""

    @hookimpl
    def register_kd_methods(self, register):
        register("kd", lambda o, c: o, config=KDOptions, description="test kd")
        register("dist", lambda o, c: o, description="test dist")

    @hookimpl
    def register_tasks(self, register):
        register("exception", lambda o, c: o, config=TaskOptions, description="test task")

    @hookimpl
    def register_students(self, register):
        register("transformer", lambda o, c: o, description="test student")

    @hookimpl
    def register_teachers(self, register):
        register("code-roberta", lambda o, c: o, description="test teacher")

    @hookimpl
    def register_reporters(self, register):
        register("console", lambda o, c: o, description="test reporter")
        register("jsonl", lambda o, c: o, description="test reporter")


@pytest.fixture
def core_registry():
    from kdkit.discovery import load_plugins

    return load_plugins(allow=[], extra=[("core-test", CorePlugin())]).registry


def make_distribution(root: Path, name: str, entry_points: dict[str, str], modules: dict[str, str]):
    """Write an importable fake installed distribution (dist-info + modules) under ``root``."""
    info = root / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    eps = "\n".join(f"{k} = {v}" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[kdkit]\n{eps}\n")
    for mod, source in modules.items():
        (root / f"{mod}.py").write_text(textwrap.dedent(source))
    return root
