"""Every hook in kdkit/hookspecs.py has a test that exercises it through the plugin manager.

The rule (datasette's, made checkable): for each hook ``H`` some module under ``tests/`` defines
a test function ``test_hook_H``, and that module implements ``H`` with ``@hookimpl`` and loads
the implementation through :func:`kdkit.discovery.load_plugins` — so the hook is called by
pluggy, the way a real run calls it, not by calling the implementation directly.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from kdkit import plugin_docs

TESTS = Path(__file__).resolve().parents[1]


def _is_hookimpl(decorator: ast.expr) -> bool:
    return isinstance(decorator, ast.Name | ast.Attribute) and (
        getattr(decorator, "id", None) == "hookimpl"
        or getattr(decorator, "attr", None) == "hookimpl"
    )


def _scan() -> dict[str, list[tuple[str, set[str], bool]]]:
    """test_hook_* function name -> [(module, hooks implemented there, loads plugins)]."""
    found: dict[str, list[tuple[str, set[str], bool]]] = {}
    for path in sorted(TESTS.rglob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        nodes = list(ast.walk(tree))
        implemented = {
            n.name
            for n in nodes
            if isinstance(n, ast.FunctionDef) and any(_is_hookimpl(d) for d in n.decorator_list)
        }
        loads = any(
            isinstance(n, ast.Call)
            and getattr(n.func, "id", getattr(n.func, "attr", "")) == "load_plugins"
            for n in nodes
        )
        for n in tree.body:
            if isinstance(n, ast.FunctionDef) and n.name.startswith("test_hook_"):
                rel = str(path.relative_to(TESTS.parent))
                found.setdefault(n.name, []).append((rel, implemented, loads))
    return found


SCAN = _scan()


@pytest.mark.parametrize("hook", [f.__name__ for f in plugin_docs.hook_functions()])
def test_every_hook_has_a_test_through_the_plugin_manager(hook):
    tests = SCAN.get(f"test_hook_{hook}")
    assert tests, (
        f"no test named test_hook_{hook} under tests/: add one that registers an "
        f"in-test @hookimpl {hook} with load_plugins(extra=...) and checks what it did"
    )
    assert any(hook in implemented and loads for _, implemented, loads in tests), (
        f"test_hook_{hook} ({[t[0] for t in tests]}) must sit in a module that implements "
        f"@hookimpl {hook} and loads it with load_plugins, so pluggy calls it"
    )


def test_no_test_names_a_hook_that_does_not_exist():
    hooks = {f.__name__ for f in plugin_docs.hook_functions()}
    stray = sorted(
        name
        for name in SCAN
        if not any(name == f"test_hook_{h}" or name.startswith(f"test_hook_{h}_") for h in hooks)
    )
    assert not stray, f"tests named after hooks that do not exist: {stray}"
