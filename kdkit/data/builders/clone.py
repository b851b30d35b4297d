"""Offline builder of clone-detection pairs (BigCloneBench / CodeXGLUE format) from real code.

For each real function ``f`` (the first member of its pairs, as written):

* a **positive** pair ``(f, R(f))`` where ``R`` is a random semantics-preserving rewrite
  (:mod:`kdkit.data.rewrites`: renaming, reformatting, reordering, loop/comprehension, ...);
* a **negative** pair, either a *near miss* ``(f, R(m(f)))`` where ``m`` is a one-token semantic
  mutation (:mod:`kdkit.data.mutations`), or ``(f, R(g))`` with ``g`` another function of similar
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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdkit.data.builders.common import (
    SPLIT_FILES,
    BuildReport,
    Timer,
    check_size,
    load_corpus,
    log,
    size_filter,
    split_by_group,
    write_jsonl,
    write_stats,
)
from kdkit.data.metrics import roc_auc
from kdkit.data.mutations import mutate
from kdkit.data.pyfuncs import normalise_code
from kdkit.data.rewrites import rewrite

LABELS = ("different", "clone")
_TOKEN = re.compile(r"[A-Za-z_]\w*|\d+|\S")


def token_jaccard(a: str, b: str) -> float:
    """Jaccard similarity of the sets of code tokens (identifiers, numbers, symbols)."""
    ta, tb = set(_TOKEN.findall(a)), set(_TOKEN.findall(b))
    return len(ta & tb) / len(ta | tb) if ta or tb else 1.0


def build(
    out_dir: str | os.PathLike[str],
    sources: Sequence[str] = ("stdlib",),
    *,
    files: Sequence[str | os.PathLike[str]] | None = None,
    near_miss_share: float = 0.7,
    seed: int = 0,
    split_by: str = "file",
    min_lines: int = 4,
    max_lines: int = 30,
    max_chars: int = 1000,
    max_functions: int | None = None,
    min_examples: int = 100,
    quiet: bool = False,
) -> BuildReport:
    """Build BigCloneBench-format clone pairs into ``out_dir``.

    Args:
        out_dir: output folder (``data.jsonl``, ``train/valid/test.txt``, ``stats.json``).
        sources: ``stdlib``, ``site-packages``, directories (ignored when ``files`` is given).
        files: explicit module paths (fast in-process builds).
        near_miss_share: share of negatives that are near-miss mutants of the same function (the
            rest are other functions of similar size).
        seed: seeds rewrites, mutations, pairing and the split.
        split_by: ``"file"`` or ``"package"``.
        min_lines, max_lines, max_chars: function size range (a pair must fit one sequence).
        max_functions: seeded cap on the number of anchor functions (two pairs each).
        min_examples: fewer pairs in total (or an empty split) is an error.
        quiet: no progress on stderr.
    """
    timer = Timer()
    out = Path(out_dir)
    corpus = load_corpus(sources, files, size_filter(min_lines, max_lines, max_chars))
    log(f"parsed {corpus.files} files, {len(corpus.functions)} functions", quiet)
    functions = corpus.functions
    if max_functions is not None and len(functions) > max_functions:
        keep = sorted(random.Random(seed).sample(range(len(functions)), max_functions))
        functions = [functions[i] for i in keep]
    items = [(sf.group(split_by), normalise_code(fn.text), sf, fn) for sf, fn in functions]
    result = split_by_group(items, lambda i: i[0], lambda i: i[1], seed)
    skipped = dict(corpus.skipped)
    skipped["near_duplicate"] = result.duplicates_dropped
    rng = random.Random(seed)
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
            if rng.random() < near_miss_share:
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
    counts = {s: {LABELS[lab]: n for lab, n in sorted(Counter(p[2] for p in ps).items())}
              for s, ps in pairs.items()}  # fmt: skip
    check_size("clone", {s: len(p) for s, p in pairs.items()}, min_examples,
               "add sources (e.g. --from stdlib site-packages DIR) or lower --min-examples")  # fmt: skip
    auc = {
        s: round(roc_auc([j for j, _ in js], [y for _, y in js]), 4) for s, js in jaccard.items()
    }
    write_jsonl(out / "data.jsonl", ({"idx": str(i), "func": t} for t, i in texts.items()))
    for split, name in SPLIT_FILES.items():
        path = out / f"{name}.txt"
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text("".join(f"{a}\t{b}\t{y}\n" for a, b, y in pairs[split]), encoding="utf-8")
        os.replace(tmp, path)
    extra: dict[str, Any] = {
        "pair_kinds": {s: dict(sorted(k.items())) for s, k in kinds.items()},
        "jaccard_auc": auc,
        "jaccard_auc_test": auc["test"],
        "rewrites_applied": dict(sorted(rewrites_used.items())),
        "functions_in_data_jsonl": len(texts),
    }
    report = BuildReport(
        task="clone",
        out_dir=out,
        counts=counts,
        skipped={k: v for k, v in skipped.items() if v},
        sources=corpus.sources,
        options={
            "near_miss_share": near_miss_share,
            "seed": seed,
            "split_by": split_by,
            "min_lines": min_lines,
            "max_lines": max_lines,
            "max_chars": max_chars,
            "max_functions": max_functions,
        },  # fmt: skip
        extra=extra,
    )
    report.seconds = timer()
    write_stats(report)
    return report
