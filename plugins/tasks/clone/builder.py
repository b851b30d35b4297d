"""Offline builder of clone-detection pairs (BigCloneBench / CodeXGLUE format) from real code.

For each real function ``f`` (the first member of its pairs, as written):

* a **positive** pair ``(f, R(f))`` where ``R`` is a random semantics-preserving rewrite
  (:mod:`kdkit.plugins.tasks.clone.rewrites`: renaming, reformatting, reordering, loop/comprehension, ...);
* a **negative** pair, either a *near miss* ``(f, R(m(f)))`` where ``m`` is a one-token semantic
  mutation (:mod:`kdkit.plugins.tasks.mutations`), or ``(f, R(g))`` with ``g`` another function of similar
  size from the same split.

Every second member goes through the same rewrite distribution, so layout says nothing about the
label, and near misses share almost all tokens with ``f``: token overlap alone cannot solve the
task. The build reports the ROC-AUC of a token-Jaccard baseline on its test split.

Output: ``data.jsonl`` (``idx``, ``func``) and ``train.txt``/``valid.txt``/``test.txt`` with
``idx1<TAB>idx2<TAB>label``, read by :mod:`kdkit.plugins.tasks.clone` like BigCloneBench.
"""

from __future__ import annotations

import bisect
import os
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import Field

from kdkit.data import build as offline
from kdkit.data.corpus import load_corpus, size_filter
from kdkit.data.metrics import roc_auc
from kdkit.data.pyfuncs import normalise_code
from kdkit.plugins.tasks.mutations import mutate

from .rewrites import rewrite

LABELS = ("different", "clone")
_TOKEN = re.compile(r"[A-Za-z_]\w*|\d+|\S")


def token_jaccard(a: str, b: str) -> float:
    """Jaccard similarity of the sets of code tokens (identifiers, numbers, symbols)."""
    ta, tb = set(_TOKEN.findall(a)), set(_TOKEN.findall(b))
    return len(ta & tb) / len(ta | tb) if ta or tb else 1.0


class CloneBuildOptions(offline.SourceBuildOptions):
    """Options of the offline ``clone`` builder (``kdkit data build clone`` flags)."""

    near_miss_share: float = Field(
        0.7,
        ge=0,
        le=1,
        description="share of negatives that are near-miss mutants of the same "
        "function (the rest: other functions of similar size)",
    )
    min_lines: int = Field(4, ge=1, description="skip shorter functions (lines)")
    max_lines: int = Field(
        30, ge=4, description="skip longer functions (lines; a pair must fit one sequence)"
    )
    max_chars: int = Field(1000, ge=1, description="skip longer functions (characters)")
    max_functions: int | None = Field(
        None, ge=1, description="seeded cap on the anchor functions used (two pairs each)"
    )


def build(
    out_dir: str | os.PathLike[str], options: CloneBuildOptions, *, quiet: bool = False
) -> offline.BuildReport:
    """Build BigCloneBench-format clone pairs into ``out_dir`` (``data.jsonl``,
    ``train/valid/test.txt``, ``stats.json``); progress on stderr unless ``quiet``."""
    o = options
    timer = offline.Timer()
    out = Path(out_dir)
    corpus = load_corpus(o, size_filter(o.min_lines, o.max_lines, o.max_chars), quiet)
    functions = corpus.sample(o.max_functions, o.seed)
    items = [(sf.group(o.split_by), normalise_code(fn.text), sf, fn) for sf, fn in functions]
    result = offline.split_by_group(
        items, lambda i: i[0], lambda i: i[1], o.seed, eval_allowed=o.eval_allowed
    )
    skipped = dict(corpus.skipped)
    skipped["near_duplicate"] = result.duplicates_dropped
    rng = random.Random(o.seed)
    texts: dict[str, int] = {}  # function text -> idx in data.jsonl

    def idx_of(text: str) -> int:
        return texts.setdefault(text, len(texts))

    pairs: dict[str, list[tuple[int, int, int]]] = {}
    kinds: dict[str, Counter[str]] = {}
    jaccard: dict[str, list[tuple[float, int]]] = {}
    rewrites_used: Counter[str] = Counter()
    for split, chosen in result.splits.items():
        pairs[split], kinds[split], jaccard[split] = [], Counter(), []
        by_size = sorted(range(len(chosen)), key=lambda i: len(chosen[i][3].text))
        sizes = [len(chosen[i][3].text) for i in by_size]
        for n, (_, _, _, fn) in enumerate(chosen):
            anchor = fn.text
            try:
                positive, applied = rewrite(anchor, rng)
            except (SyntaxError, ValueError, RecursionError):
                skipped["rewrite_failed"] = skipped.get("rewrite_failed", 0) + 1
                continue
            if positive == anchor:  # nothing to rewrite: an (f, f) pair teaches nothing
                skipped["rewrite_identical"] = skipped.get("rewrite_identical", 0) + 1
                continue
            rewrites_used.update(k for k, v in applied.items() if v)
            negative, kind = None, "other_function"
            if rng.random() < o.near_miss_share:
                edit = mutate(fn, rng)
                if edit is not None:
                    try:
                        negative, _ = rewrite(edit.apply(anchor), rng)
                        kind = f"near_miss:{edit.kind}"
                    except (SyntaxError, ValueError, RecursionError):
                        negative = None
            if negative is None and len(chosen) > 1:
                # Another function of similar length: a random one of the 10 nearest in size.
                at = bisect.bisect_left(sizes, len(anchor))
                lo, hi = max(0, at - 5), min(len(chosen), at + 5)
                pick = chosen[by_size[rng.randrange(lo, hi)]][3]
                if pick is fn:
                    pick = chosen[by_size[lo if by_size[lo] != n else hi - 1]][3]
                if pick is not fn and normalise_code(pick.text) != normalise_code(anchor):
                    try:
                        negative, _ = rewrite(pick.text, rng)
                    except (SyntaxError, ValueError, RecursionError):
                        negative = None
            a = idx_of(anchor)
            pairs[split].append((a, idx_of(positive), 1))
            kinds[split]["positive"] += 1
            jaccard[split].append((token_jaccard(anchor, positive), 1))
            if negative is not None:
                pairs[split].append((a, idx_of(negative), 0))
                kinds[split][kind] += 1
                jaccard[split].append((token_jaccard(anchor, negative), 0))
        rng.shuffle(pairs[split])
    counts = {
        s: {LABELS[lab]: n for lab, n in sorted(Counter(p[2] for p in ps).items())}
        for s, ps in pairs.items()
    }
    offline.check_size("clone", {s: len(p) for s, p in pairs.items()}, o.min_examples)
    auc = {
        s: round(roc_auc([j for j, _ in js], [y for _, y in js]), 4) for s, js in jaccard.items()
    }
    offline.write_jsonl(out / "data.jsonl", ({"idx": str(i), "func": t} for t, i in texts.items()))
    for split, name in offline.SPLIT_FILES.items():
        lines = "".join(f"{a}\t{b}\t{y}\n" for a, b, y in pairs[split])
        offline.write_text(out / f"{name}.txt", lines)
    extra: dict[str, Any] = {
        "pair_kinds": {s: dict(sorted(k.items())) for s, k in kinds.items()},
        "jaccard_auc": auc,
        "jaccard_auc_test": auc["test"],
        "rewrites_applied": dict(sorted(rewrites_used.items())),
        "functions_in_data_jsonl": len(texts),
    }
    report = offline.BuildReport(
        "clone",
        out,
        counts,
        skipped,
        corpus.sources,
        options={
            "near_miss_share": o.near_miss_share,
            "seed": o.seed,
            "split_by": o.split_by,
            "holdout": o.holdout_record(),
            "min_lines": o.min_lines,
            "max_lines": o.max_lines,
            "max_chars": o.max_chars,
            "max_functions": o.max_functions,
        },
        extra=extra,
    )
    return offline.finish_build(report, timer)
