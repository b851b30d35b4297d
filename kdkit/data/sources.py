"""Real Python source on this machine: resolve ``--from`` sources and read modules safely.

A *source* is ``stdlib`` (the running interpreter's standard library, without its
``site-packages``), ``site-packages`` (installed third-party packages) or a directory. Files are
listed in a stable order; files that are not UTF-8, do not parse, or are too large are skipped and
counted (:class:`SkipCounter`), never fatal.
"""

from __future__ import annotations

import ast
import os
import sys
import sysconfig
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from kdkit.errors import KdkitError

#: Directory names never descended into (caches, VCS, virtualenvs, nested site-packages).
SKIP_DIRS = frozenset(
    {"site-packages", "dist-packages", "__pycache__", ".git", ".hg", ".tox", ".venv", "venv",
     "node_modules", ".mypy_cache", ".pytest_cache", "build", "dist"}
)  # fmt: skip
#: Files larger than this are skipped (generated tables, vendored blobs).
MAX_FILE_BYTES = 1_000_000


@dataclass(frozen=True)
class SourceRoot:
    """One resolved source: a label (``stdlib``, ``site-packages`` or the directory) and a path."""

    label: str
    path: Path


@dataclass(frozen=True)
class SourceFile:
    """A Python file of a source.

    Attributes:
        path: absolute path.
        rel: path relative to its root, with ``/`` separators (``email/utils.py``).
        root: the label of its :class:`SourceRoot`.
    """

    path: Path
    rel: str
    root: str

    def group(self, split_by: str) -> str:
        """The unit that splits keep together: the file, or its top-level package."""
        if split_by == "package":
            head = self.rel.split("/", 1)[0]
            return f"{self.root}:{head.removesuffix('.py')}"
        return f"{self.root}:{self.rel}"


class SkipCounter(Counter):
    """Counts of files and functions skipped, by reason (``not_utf8``, ``syntax_error``, ...)."""


def resolve_sources(sources: Sequence[str]) -> list[SourceRoot]:
    """Resolve ``stdlib``, ``site-packages`` and directory names to existing roots."""
    if not sources:
        raise KdkitError("no sources given", where="--from",
                         fix="name at least one of: stdlib, site-packages, a directory")  # fmt: skip
    roots: list[SourceRoot] = []
    for name in sources:
        if name == "stdlib":
            roots.append(SourceRoot("stdlib", Path(sysconfig.get_paths()["stdlib"])))
        elif name == "site-packages":
            paths = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
            roots.extend(SourceRoot("site-packages", Path(p)) for p in sorted(paths))
        else:
            path = Path(name).expanduser()
            if not path.is_dir():
                raise KdkitError(
                    f"source {name!r} is neither 'stdlib', 'site-packages' nor a directory",
                    where="--from",
                    fix="pass stdlib, site-packages or an existing directory of Python files",
                )
            roots.append(SourceRoot(str(path.resolve()), path.resolve()))
    return roots


def describe_sources(roots: Sequence[SourceRoot]) -> list[dict[str, str]]:
    """JSON-friendly description of the roots (recorded in the build's stats)."""
    return [{"source": r.label, "path": str(r.path)} for r in roots] + [
        {"python": sys.version.split()[0]}
    ]


def iter_source_files(roots: Sequence[SourceRoot]) -> Iterator[SourceFile]:
    """Every ``*.py`` file under the roots, sorted, skipping :data:`SKIP_DIRS`."""
    seen: set[Path] = set()
    for root in roots:
        found: list[SourceFile] = []
        for dirpath, dirnames, filenames in os.walk(root.path):
            dirnames[:] = sorted(
                d for d in dirnames if d not in SKIP_DIRS and not d.startswith(".")
            )
            for fn in filenames:
                if fn.endswith(".py"):
                    path = Path(dirpath) / fn
                    rel = path.relative_to(root.path).as_posix()
                    found.append(SourceFile(path, rel, root.label))
        for f in sorted(found, key=lambda f: f.rel):
            if f.path not in seen:
                seen.add(f.path)
                yield f


def read_module(path: Path, skipped: SkipCounter) -> tuple[str, ast.Module] | None:
    """The text and AST of a module, or ``None`` (counted in ``skipped``) if unusable."""
    try:
        data = path.read_bytes()
    except OSError:
        skipped["unreadable"] += 1
        return None
    if len(data) > MAX_FILE_BYTES:
        skipped["too_large"] += 1
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        skipped["not_utf8"] += 1
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SyntaxWarning of invalid escapes in old code
            tree = ast.parse(text, filename=str(path))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        skipped["syntax_error"] += 1
        return None
    return text, tree
