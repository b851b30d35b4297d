"""Functions of real Python source trees, for builders: parse every file of the sources into
:class:`~kdkit.data.pyfuncs.PyFunction` s with the file each came from, filtered by size, with
what was skipped counted."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kdkit.data.build import SourceBuildOptions, log
from kdkit.data.pyfuncs import PyFunction, extract_functions
from kdkit.data.sources import (
    SkipCounter,
    SourceFile,
    describe_sources,
    iter_source_files,
    read_module,
    resolve_sources,
)


@dataclass
class Corpus:
    """The functions of some sources, with the file each came from and what was skipped."""

    functions: list[tuple[SourceFile, PyFunction]]
    skipped: SkipCounter
    sources: list[dict[str, str]]
    files: int = 0

    def sample(self, k: int | None, seed: int) -> list[tuple[SourceFile, PyFunction]]:
        """A seeded sample of at most ``k`` functions, in corpus order (``None``: all)."""
        if k is None or len(self.functions) <= k:
            return self.functions
        keep = sorted(random.Random(seed).sample(range(len(self.functions)), k))
        return [self.functions[i] for i in keep]


def read_corpus(
    sources: Sequence[str] | None = None,
    files: Sequence[str | os.PathLike[str]] | None = None,
    keep: Callable[[PyFunction], bool] | None = None,
    relevant: Callable[[PyFunction], bool] | None = None,
) -> Corpus:
    """Parse every Python file of ``sources`` (or the explicit ``files``) into functions.

    Args:
        sources: ``stdlib``, ``site-packages`` and/or directories (see :mod:`kdkit.data.sources`).
        files: explicit module paths instead (e.g. a slice of the stdlib for a fast test build);
            each file is its own split group.
        keep: a filter on functions (size limits); rejected functions are counted.
        relevant: a cheap filter applied first, whose rejects are not counted (e.g. "has an
            ``except``"): functions a builder can never use are not held in memory (with the
            whole of ``deps``, 165,000 functions and their ASTs would take ~5 GB).
    """
    skipped = SkipCounter()
    if files is not None:
        listed = [SourceFile(Path(p).resolve(), Path(p).name, "files") for p in files]
        desc = [{"source": "files", "count": str(len(listed))}]
    else:
        roots = resolve_sources(list(sources or []))
        listed = list(iter_source_files(roots))
        desc = describe_sources(roots)
    functions: list[tuple[SourceFile, PyFunction]] = []
    for sf in listed:
        parsed = read_module(sf.path, skipped)
        if parsed is None:
            continue
        for fn in extract_functions(*parsed):
            if relevant is not None and not relevant(fn):
                continue
            if keep is None or keep(fn):
                functions.append((sf, fn))
            else:
                skipped["function_size"] += 1
    return Corpus(functions, skipped, desc, len(listed))


def load_corpus(
    options: SourceBuildOptions,
    keep: Callable[[PyFunction], bool] | None,
    quiet: bool,
    relevant: Callable[[PyFunction], bool] | None = None,
) -> Corpus:
    """:func:`read_corpus` of a builder's ``sources`` / ``files``, with progress on stderr."""
    corpus = read_corpus(options.sources, options.files, keep, relevant)
    log(f"parsed {corpus.files} files, {len(corpus.functions)} functions", quiet)
    return corpus


def size_filter(min_lines: int, max_lines: int, max_chars: int) -> Callable[[PyFunction], bool]:
    """Keep functions with ``min_lines..max_lines`` lines and at most ``max_chars`` characters."""

    def keep(fn: PyFunction) -> bool:
        return min_lines <= fn.num_lines <= max_lines and len(fn.text) <= max_chars

    return keep


#: Standard-library modules (not tests) rich in functions and ``except`` clauses: a small, real
#: corpus for fast builds in tests (about 450 exception examples, a few thousand functions).
STDLIB_SAMPLE = (
    "shutil.py",
    "pdb.py",
    "pathlib.py",
    "inspect.py",
    "importlib/_bootstrap.py",
    "mailbox.py",
    "tarfile.py",
    "platform.py",
    "importlib/_bootstrap_external.py",
    "pydoc.py",
    "tomllib/_parser.py",
    "urllib/request.py",
    "unittest/mock.py",
    "os.py",
    "xml/dom/minidom.py",
    "zipimport.py",
    "ntpath.py",
    "_pyio.py",
    "subprocess.py",
    "unittest/case.py",
    "enum.py",
)


def stdlib_sample(names: Sequence[str] = STDLIB_SAMPLE) -> list[Path]:
    """Paths of ``names`` in the running interpreter's standard library (missing ones left out)."""
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    return [root / n for n in names if (root / n).is_file()]
