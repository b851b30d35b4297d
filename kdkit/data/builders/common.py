"""What every offline builder shares: the corpus walk, seeded group splits with cross-split
de-duplication, writing the public format atomically, and counts (printed and saved as JSON)."""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from kdkit.data.pyfuncs import PyFunction, extract_functions
from kdkit.data.sources import (
    SkipCounter,
    SourceFile,
    describe_sources,
    iter_source_files,
    read_module,
    resolve_sources,
)
from kdkit.errors import KdkitError

#: Split names in kdkit and the file each is written to (CodeXGLUE's naming).
SPLIT_FILES = {"train": "train", "validation": "valid", "test": "test"}
SPLITS = tuple(SPLIT_FILES)
#: Name of the counts file written beside the data.
STATS_FILE = "stats.json"

T = TypeVar("T")


@dataclass
class Corpus:
    """The functions of some sources, with the file each came from and what was skipped."""

    functions: list[tuple[SourceFile, PyFunction]]
    skipped: SkipCounter
    sources: list[dict[str, str]]
    files: int = 0


def load_corpus(
    sources: Sequence[str] | None = None,
    files: Sequence[str | os.PathLike[str]] | None = None,
    keep: Callable[[PyFunction], bool] | None = None,
) -> Corpus:
    """Parse every Python file of ``sources`` (or the explicit ``files``) into functions.

    Args:
        sources: ``stdlib``, ``site-packages`` and/or directories (see :mod:`kdkit.data.sources`).
        files: explicit module paths instead (e.g. a slice of the stdlib for a fast test build);
            each file is its own split group.
        keep: a filter on functions (size limits); rejected functions are counted.
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
            if keep is None or keep(fn):
                functions.append((sf, fn))
            else:
                skipped["function_size"] += 1
    return Corpus(functions, skipped, desc, len(listed))


def size_filter(min_lines: int, max_lines: int, max_chars: int) -> Callable[[PyFunction], bool]:
    """Keep functions with ``min_lines..max_lines`` lines and at most ``max_chars`` characters."""

    def keep(fn: PyFunction) -> bool:
        return min_lines <= fn.num_lines <= max_lines and len(fn.text) <= max_chars

    return keep


@dataclass
class SplitResult:
    """Items per split after grouping and de-duplication, and how many were dropped."""

    splits: dict[str, list[Any]]
    duplicates_dropped: int = 0


def split_by_group(
    items: Sequence[T],
    group_of: Callable[[T], str],
    key_of: Callable[[T], str],
    seed: int,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> SplitResult:
    """Seeded train/validation/test split that keeps each group (file or package) together and
    never lets one normalised text appear in two groups.

    Groups are shuffled with ``seed``; each goes to the split that is furthest below its share. A de-duplication key (:func:`kdkit.data.pyfuncs.normalise_code` of the
    base function) belongs to the first group that has it; items of other groups with that key are
    dropped, so no near-duplicate crosses a split (nor repeats inside one from another file).
    """
    by_group: dict[str, list[T]] = {}
    for item in items:
        by_group.setdefault(group_of(item), []).append(item)
    order = sorted(by_group)
    random.Random(seed).shuffle(order)
    owner: dict[str, str] = {}
    dropped = 0
    kept_groups: list[tuple[str, list[T]]] = []
    for g in order:
        kept = []
        for item in by_group[g]:
            k = key_of(item)
            if owner.setdefault(k, g) == g:
                kept.append(item)
            else:
                dropped += 1
        if kept:
            kept_groups.append((g, kept))
    # Each group goes to the split furthest below its share (ties: train, validation, test), so
    # shares are met closely and, with at least three groups, no split is left empty.
    splits: dict[str, list[T]] = {s: [] for s in SPLITS}
    for _, kept in kept_groups:
        name = min(
            SPLITS, key=lambda s: (len(splits[s]) / fractions[SPLITS.index(s)], SPLITS.index(s))
        )
        splits[name].extend(kept)
    return SplitResult(splits, dropped)


@dataclass
class BuildReport:
    """What a build wrote: per-split and per-label counts, skips, timings (saved as stats.json)."""

    task: str
    out_dir: Path
    counts: dict[str, dict[str, int]]
    skipped: dict[str, int]
    sources: list[dict[str, str]]
    options: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def sizes(self) -> dict[str, int]:
        """Examples per split."""
        return {s: sum(c.values()) for s, c in self.counts.items()}

    def as_dict(self) -> dict[str, Any]:
        """JSON form (the content of ``stats.json``)."""
        return {
            "task": self.task,
            "sizes": self.sizes,
            "labels": self.counts,
            "skipped": self.skipped,
            "sources": self.sources,
            "options": self.options,
            **self.extra,
            "seconds": round(self.seconds, 2),
        }

    def render(self) -> str:
        """A human-readable summary: sizes, label counts per split, skips."""
        labels = sorted({lab for c in self.counts.values() for lab in c})
        width = max([len(lab) for lab in labels] + [10])
        head = f"{'label':<{width}} " + " ".join(f"{s:>10}" for s in SPLITS)
        rows = [head, "-" * len(head)]
        for lab in labels:
            rows.append(
                f"{lab:<{width}} " + " ".join(f"{self.counts[s].get(lab, 0):>10}" for s in SPLITS)
            )
        rows.append(f"{'total':<{width}} " + " ".join(f"{self.sizes[s]:>10}" for s in SPLITS))
        lines = [f"kdkit data build {self.task} -> {self.out_dir}", *rows]
        if self.skipped:
            lines.append(
                "skipped: " + ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items()))
            )
        for k, v in self.extra.items():
            if isinstance(v, dict) and set(v) == set(SPLITS):
                lines.append(f"{k}: " + "; ".join(f"{s} {v[s]}" for s in SPLITS))
            elif not isinstance(v, dict | list):
                lines.append(f"{k}: {v}")
        lines.append(f"took {self.seconds:.1f} s")
        return "\n".join(lines)


def check_size(task: str, sizes: dict[str, int], min_examples: int, hint: str) -> None:
    """Fail clearly (instead of writing empty files) when a build is empty or too small."""
    total = sum(sizes.values())
    empty = [s for s, n in sizes.items() if n == 0]
    if total < min_examples or empty:
        raise KdkitError(
            f"the {task} build produced {total} examples ({sizes}); "
            f"at least {min_examples} and a non-empty train/validation/test are needed",
            where=f"kdkit data build {task}",
            fix=hint,
        )


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows as JSON lines atomically (temp file + rename); returns the row count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    n = 0
    with tmp.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, path)
    return n


def write_stats(report: BuildReport) -> Path:
    """Save ``stats.json`` beside the data and return its path."""
    path = report.out_dir / STATS_FILE
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(report.as_dict(), indent=2, ensure_ascii=False) + "\n", "utf-8")
    os.replace(tmp, path)
    return path


class Timer:
    """Wall-clock seconds since creation."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.start


def log(message: str, quiet: bool) -> None:
    """Progress on stderr unless ``quiet``."""
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def grouped(
    corpus: Corpus, split_by: str
) -> Iterator[tuple[str, SourceFile, PyFunction]]:  # pragma: no cover - convenience
    """``(group, file, function)`` for every function of a corpus."""
    for sf, fn in corpus.functions:
        yield sf.group(split_by), sf, fn


#: Standard-library modules (not tests) rich in functions and ``except`` clauses: a small, real
#: corpus for fast builds in tests (about 450 exception examples, a few thousand functions).
STDLIB_SAMPLE = (
    "shutil.py", "pdb.py", "pathlib.py", "inspect.py", "importlib/_bootstrap.py", "mailbox.py",
    "tarfile.py", "platform.py", "importlib/_bootstrap_external.py", "pydoc.py",
    "tomllib/_parser.py", "urllib/request.py", "unittest/mock.py", "os.py", "xml/dom/minidom.py",
    "zipimport.py", "ntpath.py", "_pyio.py", "subprocess.py", "unittest/case.py", "enum.py",
)  # fmt: skip


def stdlib_sample(names: Sequence[str] = STDLIB_SAMPLE) -> list[Path]:
    """Paths of ``names`` in the running interpreter's standard library (missing ones left out)."""
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    return [root / n for n in names if (root / n).is_file()]
