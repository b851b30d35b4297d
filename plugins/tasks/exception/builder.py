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
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from kdkit.data import build as offline
from kdkit.data.corpus import load_corpus, size_filter
from kdkit.data.pyfuncs import PyFunction, normalise_code
from kdkit.errors import KdkitError

#: The masked token that replaces the exception type.
HOLE = "__HOLE__"

#: CuBERT's 20 exception types (Kanade et al., ICML 2020, exception classification benchmark).
CUBERT_LABELS: tuple[str, ...] = (
    "ValueError",
    "KeyError",
    "AttributeError",
    "TypeError",
    "OSError",
    "IOError",
    "ImportError",
    "IndexError",
    "DoesNotExist",
    "KeyboardInterrupt",
    "StopIteration",
    "AssertionError",
    "SystemExit",
    "RuntimeError",
    "HTTPError",
    "UnicodeDecodeError",
    "NotImplementedError",
    "ValidationError",
    "ObjectDoesNotExist",
    "NameError",
)


#: Catch-all handler types: a model learns nothing about the code from them (CuBERT excludes them),
#: so ``top-K`` leaves them out unless ``keep_catch_alls``.
CATCH_ALLS: tuple[str, ...] = ("Exception", "BaseException")

#: Code tokens of :func:`token_window` (the lexical baselines' tokens): identifiers, integer
#: literals, every other non-space character on its own.
_CODE_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+|[^\sA-Za-z0-9_]")


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


def token_window(text: str, hole: int, tokens: int, before: float) -> str:
    """The span of ``text`` covering ``tokens`` code tokens around the one at character ``hole``
    (``before`` of them before it, the rest from it on; shifted inward at the function's ends).

    Tokens are those of :data:`_CODE_TOKEN`; the cut keeps the original layout between them.
    """
    spans = [m.span() for m in _CODE_TOKEN.finditer(text)]
    if len(spans) <= tokens:
        return text
    at = next((i for i, (s, e) in enumerate(spans) if e > hole), len(spans) - 1)
    lo = max(0, at - int(tokens * before))
    hi = min(len(spans), lo + tokens)
    lo = max(0, hi - tokens)
    return text[spans[lo][0] : spans[hi - 1][1]]


def resolve_labels(
    labels: str | Sequence[str] | int, found: Counter[str], keep_catch_alls: bool = False
) -> list[str]:
    """The label set: ``"cubert"``, ``"top-K"``/an int K (the corpus' K most frequent types, ties
    by name; :data:`CATCH_ALLS` left out unless ``keep_catch_alls``) or an explicit list."""
    if isinstance(labels, str) and labels.lower().startswith("top-"):
        labels = int(labels[4:])
    if isinstance(labels, int):
        if labels < 2:
            raise KdkitError(
                f"top-K needs K >= 2, got {labels}", where="exception labels", fix="use e.g. top-20"
            )
        ranked = sorted(found.items(), key=lambda kv: (-kv[1], kv[0]))
        return [k for k, _ in ranked if keep_catch_alls or k not in CATCH_ALLS][:labels]
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
    keep_catch_alls: bool = Field(
        False, description="let top-K include the catch-all types Exception and BaseException"
    )
    window: int | None = Field(
        None, ge=0, description="keep N lines before and after the hole (default: whole function)"
    )
    window_tokens: int | None = Field(
        None,
        ge=8,
        description="keep N code tokens of the function around the hole instead "
        "(see --window-before; default: whole function)",
    )
    window_before: float = Field(
        0.75, ge=0, le=1, description="share of --window-tokens taken before the hole"
    )
    min_label_rows: int = Field(
        1,
        ge=0,
        description="drop labels of cubert/top-K with fewer rows in some split (0: keep "
        "all); an explicit label list missing from a split is an error",
    )
    # Bigger, label-balanced evaluation splits than the other builders' (0.1, by size only):
    # model selection on validation means something only if its label mix is test's.
    eval_share: float = Field(
        0.15, gt=0, le=0.4, description="share of the examples in validation and in test, each"
    )
    stratify: bool = Field(
        True,
        description="assign files to splits so each split's label mix is close to the "
        "whole build's (--no-stratify: by size only)",
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

    @model_validator(mode="after")
    def _one_window(self) -> ExceptionBuildOptions:
        if self.window is not None and self.window_tokens is not None:
            raise ValueError("set window (lines) or window_tokens, not both")
        return self


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
    # Only functions with a handler can give an example: the rest are not kept (memory).
    corpus = load_corpus(
        o, size_filter(2, o.max_lines, o.max_chars), quiet, relevant=lambda fn: "except" in fn.text
    )
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
            if o.window_tokens is not None:
                text = token_window(text, start, o.window_tokens, o.window_before)
            else:
                text = crop(text, line, o.window)
            row = {"function": text, "label": label, "info": f"{sf.root}:{sf.rel} {fn.qualname}"}
            candidates.append((sf.group(o.split_by), key, row))
    label_set = resolve_labels(o.labels, found, o.keep_catch_alls)
    skipped = dict(corpus.skipped)
    rows, dropped_labels, dups = _split_rows(candidates, label_set, o, skipped)
    absent = [lab for lab in label_set if not found[lab]]
    label_set = [lab for lab in label_set if lab not in dropped_labels]
    skipped["near_duplicate"] = dups
    counts = {s: dict(Counter(r["label"] for r in rs)) for s, rs in rows.items()}
    sizes = {s: len(r) for s, r in rows.items()}
    hint = f"{offline.MORE_SOURCES}, or use a larger label set (--labels top-50)"
    offline.check_size("exception", sizes, o.min_examples, hint)
    offline.write_split_jsonl(out, rows)
    mix = offline.label_mix(counts)
    report = offline.BuildReport(
        "exception",
        out,
        counts,
        skipped,
        corpus.sources,
        options={
            "labels": label_set,
            "window": o.window,
            "window_tokens": o.window_tokens,
            "window_before": o.window_before,
            "holdout": o.holdout_record(),
            "keep_catch_alls": o.keep_catch_alls,
            "min_label_rows": o.min_label_rows,
            "eval_share": o.eval_share,
            "stratify": o.stratify,
            "seed": o.seed,
            "split_by": o.split_by,
            "max_lines": o.max_lines,
            "max_chars": o.max_chars,
        },
        extra={
            "labels_dropped": dropped_labels,
            "labels_absent": absent,
            "label_mix": mix,
            "tv_validation_test": mix["tv_validation_test"],
            "tv_train_test": mix["tv_train_test"],
        },
    )
    return offline.finish_build(report, timer)


def _split_rows(
    candidates: list[tuple[str, str, dict[str, Any]]],
    label_set: list[str],
    o: ExceptionBuildOptions,
    skipped: dict[str, int],
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, dict[str, int]], int]:
    """Rows per split of the candidates with a label of ``label_set``: the group split, exact
    de-duplication, then the labels with fewer than ``min_label_rows`` rows in some split dropped
    (re-split without them, so the split's balance is theirs). Returns the rows, the dropped
    labels (label -> its counts per split) and the near-duplicates dropped."""
    dropped: dict[str, dict[str, int]] = {}
    total = len(candidates)
    while True:
        wanted = set(label_set) - set(dropped)
        kept = [c for c in candidates if c[2]["label"] in wanted]
        skipped["handler_label_not_in_set"] = total - len(kept)
        result = offline.split_by_group(
            kept,
            lambda c: c[0],
            lambda c: c[1],
            o.seed,
            o.fractions,
            label_of=(lambda c: c[2]["label"]) if o.stratify else None,
            eval_allowed=o.eval_allowed,
        )
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
        counts = {s: Counter(r["label"] for r in rs) for s, rs in rows.items()}
        short = {
            lab: {s: counts[s][lab] for s in counts}
            for lab in sorted(wanted)
            if min(counts[s][lab] for s in counts) < max(o.min_label_rows, 1)
        }
        if not short or o.min_label_rows == 0:
            return rows, dropped, result.duplicates_dropped + exact
        present = {lab: c for lab, c in short.items() if sum(c.values())}
        if isinstance(o.labels, list) and present:
            raise KdkitError(
                f"labels of the explicit label list have too few rows in some split: {present}",
                where="kdkit data build exception --labels",
                fix="remove them from --labels, add sources (--from stdlib deps DIR), or use "
                "'cubert' / 'top-K', which drop such labels (--min-label-rows 0 keeps them)",
            )
        dropped.update(short)
