"""Real Python source on this machine: resolve ``--from`` sources and read modules safely.

A *source* is ``stdlib`` (the running interpreter's standard library, without its
``site-packages``), ``site-packages`` (installed third-party packages), ``deps`` (the installed
distributions kdkit itself requires, found through :mod:`importlib.metadata`), ``dist:NAME`` (one
installed distribution) or a directory. A distribution's roots are the top-level packages it
installs, labelled ``NAME==VERSION:package``, so its version is part of every record and cache
key of what was read (a rebuild with other versions is a different dataset). Files are
listed in a stable order; files that are not UTF-8, do not parse, or are too large are skipped and
counted (:class:`SkipCounter`), never fatal.
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import os
import re
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
    {
        "site-packages",
        "dist-packages",
        "__pycache__",
        ".git",
        ".hg",
        ".tox",
        ".venv",
        "venv",
        "node_modules",
        ".mypy_cache",
        ".pytest_cache",
        "build",
        "dist",
    }
)
#: Files larger than this are skipped (generated tables, vendored blobs).
MAX_FILE_BYTES = 1_000_000


@dataclass(frozen=True)
class SourceRoot:
    """One resolved source: a label (``stdlib``, ``site-packages`` or the directory) and a path."""

    label: str
    path: Path
    #: The distribution it belongs to and its version (``dist:NAME`` / ``deps`` sources).
    distribution: str | None = None
    version: str | None = None


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


#: The name at the start of a requirement string (``torch<2.14,>=2.4`` -> ``torch``).
_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def kdkit_requirements() -> list[str]:
    """Names of the distributions kdkit requires (its installed metadata; extras left out)."""
    try:
        requires = metadata.requires("kdkit") or []
    except metadata.PackageNotFoundError as exc:
        raise KdkitError(
            "kdkit's own distribution metadata is not installed",
            where="--from deps",
            fix="install kdkit (pip install -e .), or name the sources (dist:NAME, directories)",
        ) from exc
    names = []
    for req in requires:
        marker = req.split(";", 1)[1] if ";" in req else ""
        match = _REQUIREMENT_NAME.match(req)
        if match and "extra" not in marker:
            names.append(match.group(1))
    return names


def distribution_roots(name: str) -> list[SourceRoot]:
    """The top-level packages (or modules) of an installed distribution, as roots labelled
    ``NAME==VERSION:package``; files outside its install folder (scripts) are left out."""
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError as exc:
        raise KdkitError(
            f"distribution {name!r} is not installed",
            where=f"--from dist:{name}",
            fix=f"pip install {name}, or leave it out of the sources",
        ) from exc
    canonical, version = dist.metadata["Name"] or name, dist.version
    tops = sorted(
        {
            f.parts[0]
            for f in dist.files or []
            if f.suffix == ".py"
            and f.parts[0] != ".."
            and not f.parts[0].endswith((".dist-info", ".egg-info"))
        }
    )
    roots = []
    for top in tops:
        path = Path(str(dist.locate_file(top))).resolve()
        if path.exists():
            roots.append(
                SourceRoot(
                    f"{canonical}=={version}:{top.removesuffix('.py')}", path, canonical, version
                )
            )
    if not roots:
        raise KdkitError(
            f"distribution {name!r} installs no Python files",
            where=f"--from dist:{name}",
            fix="leave it out of the sources",
        )
    return roots


def resolve_sources(sources: Sequence[str]) -> list[SourceRoot]:
    """Resolve ``stdlib``, ``site-packages``, ``deps``, ``dist:NAME`` and directory names to
    existing roots."""
    if not sources:
        raise KdkitError(
            "no sources given",
            where="--from",
            fix="name at least one of: stdlib, site-packages, deps, dist:NAME, a directory",
        )
    roots: list[SourceRoot] = []
    for name in sources:
        if name == "deps":
            for dist in kdkit_requirements():
                roots.extend(distribution_roots(dist))
        elif name.startswith("dist:"):
            roots.extend(distribution_roots(name[5:]))
        elif name == "stdlib":
            roots.append(SourceRoot("stdlib", Path(sysconfig.get_paths()["stdlib"])))
        elif name == "site-packages":
            paths = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
            roots.extend(SourceRoot("site-packages", Path(p)) for p in sorted(paths))
        else:
            path = Path(name).expanduser()
            if not path.is_dir():
                raise KdkitError(
                    f"source {name!r} is neither 'stdlib', 'site-packages', 'deps', 'dist:NAME' "
                    "nor a directory",
                    where="--from",
                    fix="pass stdlib, site-packages, deps, dist:NAME or an existing directory "
                    "of Python files",
                )
            roots.append(SourceRoot(str(path.resolve()), path.resolve()))
    return roots


def describe_sources(roots: Sequence[SourceRoot]) -> list[dict[str, str]]:
    """JSON-friendly description of the roots (recorded in the build's stats): label, path and,
    for a distribution's roots, its name and version."""
    out: list[dict[str, str]] = []
    for r in roots:
        item = {"source": r.label, "path": str(r.path)}
        if r.distribution is not None:
            item.update(distribution=r.distribution, version=str(r.version))
        out.append(item)
    return out + [{"python": sys.version.split()[0]}]


def iter_source_files(roots: Sequence[SourceRoot]) -> Iterator[SourceFile]:
    """Every ``*.py`` file under the roots, sorted, skipping :data:`SKIP_DIRS`."""
    seen: set[Path] = set()
    for root in roots:
        if root.path.is_file():  # a distribution's single-module top level (``six.py``)
            if root.path not in seen:
                seen.add(root.path)
                yield SourceFile(root.path, root.path.name, root.label)
            continue
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
