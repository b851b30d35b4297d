"""Offline builder of CuBERT-style exception classification data from real Python code.

One example per ``except`` handler whose (single, possibly dotted) exception type is in the label
set: the function's text with that type replaced by ``__HOLE__``, labelled with the type's last
name. Output is CuBERT's JSONL (``function``, ``label``, plus ``info`` = provenance), one file per
split, so :mod:`kdkit.plugins.tasks.exception` reads it exactly like the public files.

In-process use (e.g. a test fixture with a few hundred examples in seconds)::

    from kdkit.data.corpus import stdlib_sample
    from kdkit.plugins.tasks.exception.builder import ExceptionBuildOptions, build
    report = build(tmp_path, ExceptionBuildOptions(files=stdlib_sample(), min_examples=20))
"""

from __future__ import annotations

import ast
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from kdkit.data import build as offline
from kdkit.data.corpus import load_corpus, size_filter
from kdkit.data.pyfuncs import PyFunction, normalise_code
from kdkit.errors import KdkitError

#: The masked token that replaces the exception type.
HOLE = "__HOLE__"

#: CuBERT's 20 exception types (Kanade et al., ICML 2020, exception classification benchmark).
CUBERT_LABELS: tuple[str, ...] = (
    "ValueError", "KeyError", "AttributeError", "TypeError", "OSError", "IOError", "ImportError",
    "IndexError", "DoesNotExist", "KeyboardInterrupt", "StopIteration", "AssertionError",
    "SystemExit", "RuntimeError", "HTTPError", "UnicodeDecodeError", "NotImplementedError",
    "ValidationError", "ObjectDoesNotExist", "NameError",
)  # fmt: skip


def handler_type_name(node: ast.expr | None) -> str | None:
    """The label of an ``except`` type: ``ValueError`` or the last name of ``a.b.HTTPError``;
    ``None`` for a bare ``except``, a tuple or anything computed."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = node.value
        while isinstance(inner, ast.Attribute):
            inner = inner.value
        return node.attr if isinstance(inner, ast.Name) else None
    return None


def holes(fn: PyFunction) -> list[tuple[str, int, int, int]]:
    """``(label, start, end, line)`` of every handler type of ``fn`` that can be masked."""
    out = []
    for node in fn.walk():
        if isinstance(node, ast.ExceptHandler):
            label = handler_type_name(node.type)
            if label is not None:
                start, end = fn.span(node.type)  # type: ignore[arg-type]
                out.append((label, start, end, node.type.lineno - fn.node.lineno))  # type: ignore[union-attr]
    return out


def crop(text: str, line: int, window: int | None) -> str:
    """``text`` cut to ``window`` lines before and after ``line`` (0-based); ``None`` = all."""
    if window is None:
        return text
    lines = text.splitlines(keepends=True)
    return "".join(lines[max(0, line - window) : line + window + 1])


def resolve_labels(labels: str | Sequence[str] | int, found: Counter[str]) -> list[str]:
    """The label set: ``"cubert"``, ``"top-K"``/an int K (the corpus' K most frequent types, ties
    by name) or an explicit list."""
    if isinstance(labels, str) and labels.lower().startswith("top-"):
        labels = int(labels[4:])
    if isinstance(labels, int):
        if labels < 2:
            raise KdkitError(f"top-K needs K >= 2, got {labels}", where="exception labels",
                             fix="use e.g. top-20")  # fmt: skip
        return [k for k, _ in sorted(found.items(), key=lambda kv: (-kv[1], kv[0]))[:labels]]
    if isinstance(labels, str):
        if labels != "cubert":
            raise KdkitError(
                f"unknown label set {labels!r}",
                where="exception labels",
                fix="use 'cubert', 'top-K' (e.g. top-20) or an explicit list of exception names",
            )
        return list(CUBERT_LABELS)
    return list(labels)


class ExceptionBuildOptions(offline.SourceBuildOptions):
    """Options of the offline ``exception`` builder (``kdkit data build exception`` flags)."""

    labels: str | list[str] = Field(
        "cubert",
        description="'cubert' (CuBERT's 20 types), 'top-K' (the corpus' K most frequent) or "
        "comma-separated type names",
        json_schema_extra={"metavar": "LABELS"},
    )
    window: int | None = Field(
        None, ge=0, description="keep N lines before and after the hole (default: whole function)"
    )
    max_lines: int = Field(300, ge=2, description="skip longer functions (lines)")
    max_chars: int = Field(20_000, ge=1, description="skip longer functions (characters)")

    @field_validator("labels", mode="before")
    @classmethod
    def _split_names(cls, value: Any) -> Any:
        """``"A,B,C"`` (a flag's value) -> ``["A", "B", "C"]``; ``cubert`` / ``top-K`` stay."""
        if isinstance(value, str) and value.startswith("top-") and not value[4:].isdigit():
            raise ValueError(f"{value!r}: use top-K with a whole number K, e.g. top-20")
        if isinstance(value, str) and value != "cubert" and not value.startswith("top-"):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value


def build(
    out_dir: str | os.PathLike[str], options: ExceptionBuildOptions, *, quiet: bool = False
) -> offline.BuildReport:
    """Build exception-classification JSONL (CuBERT format) into ``out_dir``.

    Writes ``train.jsonl``, ``valid.jsonl``, ``test.jsonl`` and ``stats.json``; progress goes to
    stderr unless ``quiet``. Returns the :class:`~kdkit.data.build.BuildReport` (also saved as ``stats.json``).
    """
    o = options
    timer = offline.Timer()
    out = Path(out_dir)
    corpus = load_corpus(o, size_filter(2, o.max_lines, o.max_chars), quiet)
    candidates = []  # (group, base key, row)
    found: Counter[str] = Counter()
    for sf, fn in corpus.functions:
        found_here = holes(fn)
        if not found_here:
            continue
        key = normalise_code(fn.text)
        for label, start, end, line in found_here:
            found[label] += 1
            text = fn.text[:start] + HOLE + fn.text[end:]
            row = {"function": crop(text, line, o.window), "label": label,
                   "info": f"{sf.root}:{sf.rel} {fn.qualname}"}  # fmt: skip
            candidates.append((sf.group(o.split_by), key, row))
    label_set = resolve_labels(o.labels, found)
    wanted = set(label_set)
    kept = [c for c in candidates if c[2]["label"] in wanted]
    skipped = dict(corpus.skipped)
    skipped["handler_label_not_in_set"] = len(candidates) - len(kept)
    result = offline.split_by_group(kept, lambda c: c[0], lambda c: c[1], o.seed)
    # Identical masked texts (the same function twice in one file) would repeat an example.
    seen: set[str] = set()
    rows: dict[str, list[dict[str, Any]]] = {}
    exact = 0
    for split, items in result.splits.items():
        rows[split] = []
        for _, _, row in items:
            k = normalise_code(row["function"])
            if k in seen:
                exact += 1
                continue
            seen.add(k)
            rows[split].append(row)
    skipped["near_duplicate"] = result.duplicates_dropped + exact
    counts = {s: dict(Counter(r["label"] for r in rs)) for s, rs in rows.items()}
    sizes = {s: len(r) for s, r in rows.items()}
    hint = f"{offline.MORE_SOURCES}, or use a larger label set (--labels top-50)"
    offline.check_size("exception", sizes, o.min_examples, hint)
    offline.write_split_jsonl(out, rows)
    report = offline.BuildReport(
        "exception", out, counts, skipped, corpus.sources,
        options={"labels": label_set, "window": o.window, "seed": o.seed, "split_by": o.split_by,
                 "max_lines": o.max_lines, "max_chars": o.max_chars},  # fmt: skip
    )
    return offline.finish_build(report, timer)
