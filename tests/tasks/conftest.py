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


def _small_build(tmp_path_factory, task: str, names: tuple[str, ...] | None = None):
    """``(out_dir, report)``: ``task``'s offline build (through its registered contract) of a
    slice of the real standard library (``names``, default the whole stdlib sample)."""
    from kdkit.data.corpus import stdlib_sample
    from kdkit.discovery import load_plugins

    factory = load_plugins(distributions={"kdkit"}).registry.get("task", task).factory
    files = stdlib_sample(names) if names else stdlib_sample()
    options = factory.builder_options(files=files, min_examples=50)
    out = tmp_path_factory.mktemp(task)
    return out, factory.build_offline(out, options, quiet=True)


@pytest.fixture(scope="session")
def small_build(tmp_path_factory):
    """``small_build(task, names=None) -> (out_dir, report)``: see :func:`_small_build`."""
    return lambda task, names=None: _small_build(tmp_path_factory, task, names)


@pytest.fixture(scope="session")
def exception_build(tmp_path_factory):
    """An exception dataset built from a slice of the real standard library (a few seconds)."""
    return _small_build(tmp_path_factory, "exception")


@pytest.fixture(scope="session")
def defect_build(tmp_path_factory):
    """A defect dataset built from a slice of the real standard library."""
    names = ("shutil.py", "pathlib.py", "ntpath.py", "tarfile.py", "platform.py", "zipimport.py")
    return _small_build(tmp_path_factory, "defect", names)


@pytest.fixture(scope="session")
def clone_build(tmp_path_factory):
    """Clone pairs built from a slice of the real standard library."""
    names = ("shutil.py", "pathlib.py", "ntpath.py", "tarfile.py", "platform.py", "inspect.py")
    return _small_build(tmp_path_factory, "clone", names)
