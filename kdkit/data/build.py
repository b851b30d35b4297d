"""What every offline builder shares, whatever its task: its options' common part, seeded group
splits with cross-split de-duplication, writing splits atomically, and the build report (printed
and saved as ``stats.json``).

A task that can build its dataset offline exposes a builder (the optional part of the
:class:`kdkit.api.Task` contract, :class:`kdkit.api.OfflineBuilder`)::

    class MyBuildOptions(SourceBuildOptions):          # sources, files, seed, split_by, min_examples
        min_lines: int = Field(3, ge=1, description="skip shorter functions")

    def build(out_dir: Path, options: MyBuildOptions, *, quiet: bool = False) -> BuildReport:
        timer = Timer()
        corpus = load_corpus(options, size_filter(options.min_lines, 40, 2000), quiet)
        ...                                            # rows per split, via split_by_group
        check_size("mytask", {s: len(r) for s, r in rows.items()}, options.min_examples)
        for split, name in SPLIT_FILES.items():
            write_jsonl(Path(out_dir) / f"{name}.jsonl", rows[split])
        return finish_build(BuildReport("mytask", Path(out_dir), counts, ...), timer)

    class MyTask(CodeTask):
        builder_options = MyBuildOptions
        build_offline = staticmethod(build)

``kdkit data build mytask`` then generates its flags from ``MyBuildOptions`` (see
:mod:`kdkit.cli.data`) and a run left on the default ``source`` builds through the same function.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, ValidationError

from kdkit.api import Options
from kdkit.data.fingerprint import hash_json
from kdkit.data.formats import SPLITS
from kdkit.data.holdout import describe as describe_holdout
from kdkit.data.holdout import is_held_out
from kdkit.errors import KdkitError

#: Split names in kdkit and the file each is written to (CodeXGLUE's naming).
SPLIT_FILES = {"train": "train", "validation": "valid", "test": "test"}
#: Name of the counts file written beside the data.
STATS_FILE = "stats.json"
#: The fix of a build that came out too small (the flags are those of :class:`SourceBuildOptions`).
MORE_SOURCES = "add sources (e.g. --from stdlib site-packages DIR) or lower --min-examples"

T = TypeVar("T")


class SourceBuildOptions(Options):
    """Options of every builder that reads Python source trees; derive a task's builder options
    from it (its fields become ``kdkit data build TASK`` flags, ``sources`` as ``--from``).

    ``json_schema_extra`` of a field may set ``flag`` (the option's flag instead of
    ``--field-name``) and ``metavar`` (the placeholder in ``--help``).
    """

    sources: list[str] = Field(
        default_factory=lambda: ["stdlib"],
        description="stdlib, site-packages, deps (the distributions kdkit requires), dist:NAME "
        "and/or directories",
        json_schema_extra={"flag": "--from", "metavar": "SOURCE"},
    )
    files: list[Path] | None = Field(
        None,
        description="explicit module files instead of --from (small, fast builds)",
        json_schema_extra={"metavar": "FILE"},
    )
    seed: int = Field(0, description="seed of the split and of random edits")
    split_by: Literal["file", "package"] = Field(
        "file", description="the unit kept within one split"
    )
    min_examples: int = Field(
        100, ge=0, description="fewer examples in total (or an empty split) is an error"
    )
    eval_share: float = Field(
        0.1,
        gt=0,
        le=0.4,
        description="share of the examples in validation and in test, each (the rest is train)",
    )
    stratify: bool = Field(
        False,
        description="assign files to splits so that each split's label mix is close to "
        "the whole build's (instead of by size only)",
    )
    holdout: bool = Field(
        True,
        description="take validation and test only from the files kdkit's pre-training never "
        "reads (kdkit.data.holdout; not applied to --files); --no-holdout: from any file",
    )

    @property
    def fractions(self) -> tuple[float, float, float]:
        """(train, validation, test) shares of :attr:`eval_share`."""
        return (1 - 2 * self.eval_share, self.eval_share, self.eval_share)

    @property
    def eval_allowed(self) -> Callable[[str], bool] | None:
        """The groups that may go to validation and test (:func:`split_by_group`), or ``None``
        (no hold-out, or explicit ``files``: small builds for tests, never pre-trained on)."""
        return is_held_out if self.holdout and self.files is None else None

    def holdout_record(self) -> dict[str, Any] | None:
        """The held-out rule this build obeyed, as ``stats.json`` records it (``None``: none)."""
        return describe_holdout(self.split_by) if self.eval_allowed is not None else None


def offline_builder(factory: Any) -> tuple[type[Options], Callable[..., BuildReport]] | None:
    """``(builder_options, build_offline)`` of a registered task's factory (the optional offline
    part of the task contract, :class:`kdkit.api.OfflineBuilder`), or ``None`` if it has none."""
    model = getattr(factory, "builder_options", None)
    build = getattr(factory, "build_offline", None)
    return None if model is None or build is None else (model, build)


def validate_options(model: type[Options], values: Mapping[str, Any], where: str) -> Options:
    """``model(**values)``, with a validation failure turned into a :class:`KdkitError`."""
    try:
        return model(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}" for e in exc.errors()
        )
        raise KdkitError(
            f"invalid builder options: {problems}",
            where=where,
            fix=f"see the options of {model.__name__} (kdkit data build TASK --help)",
        ) from exc


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
    label_of: Callable[[T], str] | None = None,
    eval_allowed: Callable[[str], bool] | None = None,
) -> SplitResult:
    """Seeded train/validation/test split that keeps each group (file or package) together and
    never lets one de-duplication key appear in two groups.

    Groups are shuffled with ``seed``. A de-duplication key (e.g.
    :func:`kdkit.data.pyfuncs.normalise_code` of the base function) belongs to the first group
    that has it; items of other groups with that key are dropped, so no near-duplicate crosses a
    split (nor repeats inside one from another file).

    Without ``label_of`` each group goes to the split furthest below its share of the items.
    With ``label_of`` the split is *stratified*: groups are placed largest first (seeded order
    among equal sizes), each into the split where it most reduces the distance between the
    split's label counts and its share of every label's total (so validation and test get the
    label mix of the whole build, as far as whole groups allow).

    With ``eval_allowed`` only groups it accepts may go to validation and test (the others go
    to train first); builders pass :func:`kdkit.data.holdout.is_held_out`, so that no evaluation
    example comes from code kdkit's pre-training reads.
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
    splits: dict[str, list[T]] = {s: [] for s in SPLITS}
    if eval_allowed is not None:  # groups that may not be evaluated on go to train first
        eligible = []
        for g, kept in kept_groups:
            if eval_allowed(g):
                eligible.append((g, kept))
            else:
                splits["train"].extend(kept)
        kept_groups = eligible
    if label_of is None:
        # Each group goes to the split furthest below its share (ties: train, validation, test),
        # so shares are met closely and, with at least three groups, no split is left empty.
        for _, kept in kept_groups:
            name = min(
                SPLITS, key=lambda s: (len(splits[s]) / fractions[SPLITS.index(s)], SPLITS.index(s))
            )
            splits[name].extend(kept)
        return SplitResult(splits, dropped)
    _stratified_assign(kept_groups, label_of, fractions, splits)
    return SplitResult(splits, dropped)


def _stratified_assign(
    groups: list[tuple[str, list[T]]],
    label_of: Callable[[T], str],
    fractions: tuple[float, float, float],
    splits: dict[str, list[T]],
) -> None:
    """Greedy stratified placement of whole groups (see :func:`split_by_group`)."""
    # Rows already placed (groups that may only go to train) count towards the totals and shares.
    placed = {s: Counter(label_of(i) for i in splits[s]) for s in SPLITS}
    totals: Counter[str] = Counter(label_of(i) for _, kept in groups for i in kept)
    for counts in placed.values():
        totals.update(counts)
    # Rare labels weigh as much as frequent ones: deviations are measured relative to each
    # label's total (a file of 3 rare-label rows matters as much as 300 common ones).
    weight = {lab: 1.0 / n for lab, n in totals.items()}
    target = {s: {lab: fractions[k] * n for lab, n in totals.items()} for k, s in enumerate(SPLITS)}
    have: dict[str, Counter[str]] = placed
    size = {s: len(splits[s]) for s in SPLITS}
    total = sum(totals.values())
    # Largest groups first (a stable sort keeps the seeded order among equal sizes).
    for _, kept in sorted(groups, key=lambda g: -len(g[1])):
        counts = Counter(label_of(i) for i in kept)
        costs = {}
        for k, s in enumerate(SPLITS):
            change = sum(
                weight[lab]
                * (abs(have[s][lab] + n - target[s][lab]) - abs(have[s][lab] - target[s][lab]))
                for lab, n in counts.items()
            )
            # The same for the split's size, so shares are kept as well as label mixes.
            want = fractions[k] * total
            change += (abs(size[s] + len(kept) - want) - abs(size[s] - want)) / total
            costs[s] = (change, size[s] / want if want else 0.0, k)
        name = min(SPLITS, key=costs.__getitem__)
        splits[name].extend(kept)
        have[name].update(counts)
        size[name] += len(kept)


def label_mix(counts: Mapping[str, Mapping[str, int]]) -> dict[str, Any]:
    """Each split's label shares and how far validation and test are from train and from each
    other (total-variation distance: half the L1 distance of the share vectors, 0 = same mix)."""
    shares = {}
    for split, c in counts.items():
        n = sum(c.values()) or 1
        shares[split] = {
            lab: round(k / n, 4) for lab, k in sorted(c.items(), key=lambda kv: -kv[1])
        }

    def tv(a: str, b: str) -> float:
        labels = set(shares.get(a, {})) | set(shares.get(b, {}))
        return round(0.5 * sum(abs(shares[a].get(x, 0) - shares[b].get(x, 0)) for x in labels), 4)

    return {
        "shares": shares,
        "tv_validation_test": tv("validation", "test"),
        "tv_train_validation": tv("train", "validation"),
        "tv_train_test": tv("train", "test"),
    }


@dataclass
class BuildReport:
    """What a build wrote: per-split and per-label counts, skips, timings (saved as stats.json).

    Attributes:
        task: the task's name.
        out_dir: the folder written.
        counts: split -> label name -> examples.
        skipped: reason -> count of files, functions or examples left out (zeros are dropped).
        sources: what was read (from :func:`kdkit.data.sources.describe_sources`).
        options: the options that shaped the data (recorded as the builder resolved them).
        extra: task-specific facts (a dict keyed by split prints as one line per key).
        seconds: wall time of the build.
    """

    task: str
    out_dir: Path
    counts: dict[str, dict[str, int]]
    skipped: dict[str, int]
    sources: list[dict[str, str]]
    options: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def __post_init__(self) -> None:
        self.skipped = {k: v for k, v in self.skipped.items() if v}  # only what happened

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
            # What was scanned (paths, distribution versions, Python): equal inputs, equal key.
            "sources_fingerprint": hash_json(self.sources),
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


def check_size(
    task: str, sizes: dict[str, int], min_examples: int, hint: str = MORE_SOURCES
) -> None:
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


def build_atomically(out: Path, build: Callable[[Path], BuildReport]) -> BuildReport:
    """Run ``build(folder)`` in a new hidden folder beside ``out``, then put it at ``out`` in one
    step: a kill at any moment leaves ``out`` holding either the whole old build or the whole new
    one, never a mix of old and new splits (``kdkit data build``).

    ``out`` may be missing, empty, or an earlier build (it holds ``stats.json``), which is
    replaced whole and deleted only once the new build is in place. A folder holding anything
    else, or a file, is refused: a build never overwrites what a user put there.

    On Linux the swap of an existing ``out`` is one ``renameat2(RENAME_EXCHANGE)``; elsewhere
    (or on a file system without it) it is two renames, and a kill between them leaves the old
    build whole in ``.<out>.kdkit-old-<pid>`` beside ``out``.

    Raises:
        KdkitError: ``out`` is a file, or a folder that is not an earlier build.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise KdkitError(
            f"--out {out} is a file", where=str(out), fix="give a folder (new, empty, or a build)"
        )
    if out.is_dir() and any(out.iterdir()) and not (out / STATS_FILE).is_file():
        raise KdkitError(
            f"--out {out} holds files that are not a kdkit build (no {STATS_FILE})",
            where=str(out),
            fix="give a new or empty folder, or an earlier `kdkit data build` output to replace",
        )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}.kdkit-new-", dir=out.parent))
    except OSError as exc:
        raise KdkitError(
            f"cannot create a folder beside {out}: {exc.strerror or exc}",
            where=str(out),
            fix="give an --out in a folder you can write",
        ) from None
    try:
        report = build(work)
        if out.is_dir() and _exchange(work, out):
            shutil.rmtree(work, ignore_errors=True)  # `work` now holds the old build
        elif out.is_dir():
            old = out.with_name(f".{out.name}.kdkit-old-{os.getpid()}")
            os.rename(out, old)
            os.rename(work, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(work, out)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    report.out_dir = out
    return report


def _exchange(a: Path, b: Path) -> bool:
    """Swap folders ``a`` and ``b`` atomically (Linux ``renameat2``); ``False`` if unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False  # a C library without renameat2 (glibc < 2.28, musl)
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False  # this file system cannot exchange: fall back to two renames
    raise OSError(err, os.strerror(err), str(b))


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


def write_split_jsonl(out_dir: Path, rows: Mapping[str, Iterable[dict[str, Any]]]) -> None:
    """Write the rows of each split to ``train.jsonl`` / ``valid.jsonl`` / ``test.jsonl``."""
    for split, name in SPLIT_FILES.items():
        write_jsonl(out_dir / f"{name}.jsonl", rows[split])


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_stats(report: BuildReport) -> Path:
    """Save ``stats.json`` beside the data and return its path."""
    path = report.out_dir / STATS_FILE
    write_text(path, json.dumps(report.as_dict(), indent=2, ensure_ascii=False) + "\n")
    return path


def finish_build(report: BuildReport, timer: Timer) -> BuildReport:
    """Stamp the build's wall time on ``report``, save ``stats.json`` and return the report."""
    report.seconds = timer()
    write_stats(report)
    return report


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
