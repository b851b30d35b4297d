"""Fixtures of the task tests: fixture-file folders, an isolated cache, small real builds."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own KDKIT_CACHE so nothing leaks between tests or into ~/.cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("KDKIT_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def fixtures() -> Path:
    """The folder of hand-written files in the public formats."""
    return FIXTURES


@pytest.fixture(scope="session")
def exception_build(tmp_path_factory):
    """An exception dataset built from a slice of the real standard library (a few seconds)."""
    from kdkit.data.corpus import stdlib_sample
    from kdkit.plugins.tasks.exception.builder import ExceptionBuildOptions, build

    out = tmp_path_factory.mktemp("exception")
    report = build(out, ExceptionBuildOptions(files=stdlib_sample(), min_examples=50), quiet=True)
    return out, report


@pytest.fixture(scope="session")
def defect_build(tmp_path_factory):
    """A defect dataset built from a slice of the real standard library."""
    from kdkit.data.corpus import stdlib_sample
    from kdkit.plugins.tasks.defect.builder import DefectBuildOptions, build

    out = tmp_path_factory.mktemp("defect")
    names = ("shutil.py", "pathlib.py", "ntpath.py", "tarfile.py", "platform.py", "zipimport.py")
    report = build(out, DefectBuildOptions(files=stdlib_sample(names), min_examples=50), quiet=True)
    return out, report


@pytest.fixture(scope="session")
def clone_build(tmp_path_factory):
    """Clone pairs built from a slice of the real standard library."""
    from kdkit.data.corpus import stdlib_sample
    from kdkit.plugins.tasks.clone.builder import CloneBuildOptions, build

    out = tmp_path_factory.mktemp("clone")
    names = ("shutil.py", "pathlib.py", "ntpath.py", "tarfile.py", "platform.py", "inspect.py")
    report = build(out, CloneBuildOptions(files=stdlib_sample(names), min_examples=50), quiet=True)
    return out, report
