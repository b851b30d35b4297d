"""Meta-tests: the plugin API is documented, packaging metadata agrees with the tree, and every
module imports cleanly."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from importlib import metadata
from pathlib import Path

import pytest
import tomllib

from kdkit import plugin_docs

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
REINSTALL = "the installed metadata is stale: re-install with `pip install -e .`"


def test_every_hook_is_fully_documented():
    hooks = plugin_docs.hook_functions()
    assert len(hooks) >= 10
    for fn in hooks:
        doc = inspect.getdoc(fn) or ""
        assert len(doc.splitlines()[0]) > 10, f"hook {fn.__name__} has no summary line"
        for param in inspect.signature(fn).parameters:
            assert re.search(rf"^\s+{param}: \S", doc, re.M), (
                f"hook {fn.__name__} does not document its parameter '{param}' under Args:"
            )


def test_docs_hook_reference_in_sync():
    text = (ROOT / "docs" / "plugins.md").read_text()
    assert plugin_docs.render(text) == text, (
        "docs/plugins.md is out of date with kdkit/hookspecs.py: run `python -m kdkit.plugin_docs`"
    )


def _module_path(module: str) -> Path:
    parts = module.split(".")
    mapping = PYPROJECT["tool"]["setuptools"]["package-dir"]
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in mapping:
            return ROOT / mapping[prefix] / Path(*parts[n:])
    raise AssertionError(f"{module} is outside the mapped packages")


def test_entry_points_match_plugin_modules():
    table = PYPROJECT["project"]["entry-points"]["kdkit"]
    declared = {}
    for name, target in table.items():
        path = _module_path(target)
        assert path.with_suffix(".py").is_file() or (path / "__init__.py").is_file(), (
            f"entry point {name} = {target} names a module that does not exist"
        )
        # a plugin module is a file (methods/kd.py) or a package (tasks/clone/__init__.py)
        module_file = (
            path.with_suffix(".py") if path.with_suffix(".py").is_file() else path / "__init__.py"
        )
        declared[str(module_file.relative_to(ROOT))] = name
    # every module under plugins/ that implements a hook must be reachable through an entry point
    for path in sorted((ROOT / "plugins").rglob("*.py")):
        if "@hookimpl" in path.read_text():
            rel = str(path.relative_to(ROOT))
            assert rel in declared, (
                f"{rel} implements hooks but no entry point of group kdkit names it"
            )


def test_installed_metadata_matches_pyproject():
    dist = metadata.distribution("kdkit")
    installed = {ep.name: ep.value for ep in dist.entry_points if ep.group == "kdkit"}
    assert installed == PYPROJECT["project"]["entry-points"]["kdkit"], REINSTALL
    scripts = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    assert scripts == PYPROJECT["project"]["scripts"], REINSTALL


def test_package_list_matches_the_tree():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    assert all(p == "kdkit" or p.startswith("kdkit.") for p in listed), (
        "no top-level package other than kdkit may be shipped"
    )
    found = set()
    mapping = PYPROJECT["tool"]["setuptools"]["package-dir"]
    for package, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([package, *rel.parts]) if rel.parts else package)
    assert found == listed, (
        f"pyproject packages and folders with __init__.py differ: only listed {sorted(listed - found)}, "
        f"only on disk {sorted(found - listed)}"
    )


def _all_modules() -> list[str]:
    names = set()
    for package in ("kdkit", "kdkit.kernels", "kdkit.plugins"):
        module = importlib.import_module(package)
        names.add(package)
        for info in pkgutil.walk_packages(module.__path__, f"{package}."):
            names.add(info.name)
    names.discard("kdkit.__main__")  # runs the CLI
    return sorted(names)


@pytest.mark.parametrize("module", _all_modules())
def test_every_module_imports(module):
    importlib.import_module(module)
