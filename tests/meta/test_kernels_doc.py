"""docs/kernels.md's "Adding an op" list is what adding an op really takes.

The list's paths (``<folder>`` for the op's folder) must be exactly the places every built-in op
has: the files exist, the public function is exported and dispatched under its op name, the op
is a registered bench op, its traffic module is found by the static check, and it has its
Triton test file. And nothing else names an op: the dispatcher and the static check are
generic.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import kdkit.kernels as K
from kdkit.bench.static import op_modules
from kdkit.kernels.bench_ops import builtin_ops

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "kernels.md").read_text()
EXPECTED = [
    "kernels/<folder>/reference.py",
    "kernels/<folder>/triton.py",
    "kernels/<folder>/__init__.py",
    "kernels/__init__.py",
    "kernels/<folder>/traffic.py",
    "kernels/bench_ops.py",
    "tests/kernels/test_<folder>_triton.py",
]


def _section() -> str:
    start = DOC.index("## Adding an op")
    end = DOC.index("\n## ", start + 1) if "\n## " in DOC[start + 1 :] else len(DOC)
    nxt = DOC.find("\n### ", start)
    return DOC[start : min(end, nxt) if nxt != -1 else end]


def documented_places() -> list[str]:
    """The first backticked path of each numbered item of the section."""
    items = re.findall(r"^\d+\. `([^`]+)`", _section(), flags=re.M)
    return items


def op_folders() -> dict[str, list[str]]:
    """``{folder: [op names it dispatches]}`` for every folder of kernels/ with a triton.py."""
    out = {}
    for d in sorted((ROOT / "kernels").iterdir()):
        if (d / "triton.py").exists():
            init = (d / "__init__.py").read_text()
            out[d.name] = re.findall(r'dispatch\.choose\(\s*"(\w+)"', init)
    return out


def test_the_documented_list_is_the_one_checked_here():
    assert documented_places() == EXPECTED


def test_every_op_has_every_documented_place():
    folders = op_folders()
    assert set(folders) == {"kd", "dist", "infonce", "ckd", "sparse_kd"}
    bench_names = {op.name for op in builtin_ops()}
    plugin_src = (ROOT / "kernels" / "plugin.py").read_text()
    static = op_modules()
    for folder, ops in folders.items():
        assert ops, f"kernels/{folder}/__init__.py dispatches no op"
        for place in EXPECTED:
            path = ROOT / place.replace("<folder>", folder)
            assert path.exists(), f"{folder}: missing {path.relative_to(ROOT)}"
        assert folder in static, f"kernels/{folder}/traffic.py is not found by the static check"
        assert static[folder].static_specs("test"), f"{folder}: no static specs"
        for op in ops:
            assert op in K.__all__, f"{op} is not exported from kernels/__init__.py"
            assert op in bench_names, f"{op} has no BenchOp in kernels/bench_ops.py"
            assert f'register(\n        "{op}"' in plugin_src or f'register("{op}"' in plugin_src, (
                f"{op} is not registered in kernels/plugin.py"
            )


def _code_strings_and_names(src: str) -> set[str]:
    """String constants (docstrings left out) and dotted attribute names of a module."""
    tree = ast.parse(src)
    docs = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docs.add(id(body[0].value))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            found.add(node.value)
        elif isinstance(node, ast.Attribute):
            found.add(node.attr)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.update(node.module.split("."))
    return found


def test_nothing_else_names_an_op():
    """The dispatcher and the static check stay generic: no op or folder name in their code."""
    names = {n for ops in op_folders().values() for n in ops} | set(op_folders())
    for rel in ("kernels/dispatch.py", "kdkit/bench/static.py", "kdkit/bench/runner.py"):
        used = _code_strings_and_names((ROOT / rel).read_text())
        assert not (names & used), f"{rel} names op(s) {sorted(names & used)}"
