"""Offline builder of defect (bug) detection data in CuBERT's synthetic style, on real functions.

For every real function that admits a mutation (:mod:`kdkit.data.mutations`: variable misuse,
swapped operands, wrong binary operator) the build writes the function as it is (``target`` 0)
and one mutant (``target`` 1), so the classes are exactly balanced and the two rows differ in one
token only. Output is the Devign/CodeXGLUE defect JSONL (``func``, ``target``, ``idx``) plus
``bug_kind`` and ``info`` (provenance), so :mod:`kdkit.plugins.tasks.defect` reads it like the
public files. The correct and buggy rows of a function always fall in the same split.
"""

from __future__ import annotations

import os
import random
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
from kdkit.data.mutations import KINDS, mutate
from kdkit.data.pyfuncs import normalise_code

#: Label names of the defect task, by ``target``.
LABELS = ("correct", "buggy")


def build(
    out_dir: str | os.PathLike[str],
    sources: Sequence[str] = ("stdlib",),
    *,
    files: Sequence[str | os.PathLike[str]] | None = None,
    kinds: Sequence[str] = KINDS,
    seed: int = 0,
    split_by: str = "file",
    min_lines: int = 3,
    max_lines: int = 40,
    max_chars: int = 1600,
    max_functions: int | None = None,
    min_examples: int = 100,
    quiet: bool = False,
) -> BuildReport:
    """Build Devign-format defect JSONL into ``out_dir`` (``train/valid/test.jsonl``, stats).

    Args:
        out_dir: output folder.
        sources: ``stdlib``, ``site-packages``, directories (ignored when ``files`` is given).
        files: explicit module paths (fast in-process builds).
        kinds: mutation kinds to use (default: all three).
        seed: seeds the mutations and the split.
        split_by: ``"file"`` or ``"package"``.
        min_lines, max_lines, max_chars: function size range (the default keeps a function and
            its bug within about 512 student tokens).
        max_functions: seeded cap on the number of functions used (each gives two rows).
        min_examples: fewer rows in total (or an empty split) is an error.
        quiet: no progress on stderr.
    """
    unknown = set(kinds) - set(KINDS)
    if unknown:
        from kdkit.errors import KdkitError

        raise KdkitError(f"unknown mutation kind(s) {sorted(unknown)}", where="--kinds",
                         fix=f"choose from {', '.join(KINDS)}")  # fmt: skip
    timer = Timer()
    out = Path(out_dir)
    corpus = load_corpus(sources, files, size_filter(min_lines, max_lines, max_chars))
    log(f"parsed {corpus.files} files, {len(corpus.functions)} functions", quiet)
    functions = corpus.functions
    if max_functions is not None and len(functions) > max_functions:
        keep = sorted(random.Random(seed).sample(range(len(functions)), max_functions))
        functions = [functions[i] for i in keep]
    rng = random.Random(seed)
    items = []  # (group, key, correct row, buggy row)
    skipped = dict(corpus.skipped)
    no_site = 0
    for sf, fn in functions:
        edit = mutate(fn, rng, tuple(kinds))
        if edit is None:
            no_site += 1
            continue
        info = f"{sf.root}:{sf.rel} {fn.qualname}"
        correct = {
            "func": fn.text,
            "target": 0,
            "bug_kind": "none",
            "project": sf.root,
            "info": info,
        }
        buggy = {"func": edit.apply(fn.text), "target": 1, "bug_kind": edit.kind,
                 "project": sf.root, "info": info}  # fmt: skip
        items.append((sf.group(split_by), normalise_code(fn.text), correct, buggy))
    skipped["no_mutation_site"] = no_site
    result = split_by_group(items, lambda i: i[0], lambda i: i[1], seed)
    skipped["near_duplicate"] = result.duplicates_dropped
    rows: dict[str, list[dict[str, Any]]] = {}
    idx = 0
    for split, chosen in result.splits.items():
        rows[split] = []
        for _, _, correct, buggy in chosen:
            for row in (correct, buggy):
                rows[split].append({**row, "idx": idx})
                idx += 1
    counts = {s: {LABELS[t]: n for t, n in sorted(Counter(r["target"] for r in rs).items())}
              for s, rs in rows.items()}  # fmt: skip
    bug_kinds = {s: dict(sorted(Counter(r["bug_kind"] for r in rs if r["target"]).items()))
                 for s, rs in rows.items()}  # fmt: skip
    check_size("defect", {s: len(r) for s, r in rows.items()}, min_examples,
               "add sources (e.g. --from stdlib site-packages DIR) or lower --min-examples")  # fmt: skip
    for split, name in SPLIT_FILES.items():
        write_jsonl(out / f"{name}.jsonl", rows[split])
    report = BuildReport(
        task="defect",
        out_dir=out,
        counts=counts,
        skipped={k: v for k, v in skipped.items() if v},
        sources=corpus.sources,
        options={
            "kinds": list(kinds),
            "seed": seed,
            "split_by": split_by,
            "min_lines": min_lines,
            "max_lines": max_lines,
            "max_chars": max_chars,
            "max_functions": max_functions,
        },  # fmt: skip
        extra={"bug_kinds": bug_kinds},
    )
    report.seconds = timer()
    write_stats(report)
    return report
