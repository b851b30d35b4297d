"""Offline builder of defect (bug) detection data in CuBERT's synthetic style, on real functions.

For every real function that admits a mutation (:mod:`kdkit.plugins.tasks.mutations`: variable misuse,
swapped operands, wrong binary operator) the build writes the function as it is (``target`` 0)
and one mutant (``target`` 1), so the classes are exactly balanced and the two rows differ in one
token only. No text appears twice in a build (a function repeated in a file, or a mutant equal
to another function, is skipped and counted as ``duplicate_text``). Output is the Devign/CodeXGLUE defect JSONL (``func``, ``target``, ``idx``) plus
``bug_kind``, ``pair`` (the id the two rows of a function share: subsampling keeps them together)
and ``info`` (provenance), so :mod:`kdkit.plugins.tasks.defect` reads it like the
public files. The correct and buggy rows of a function always fall in the same split.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from kdkit.data import build as offline
from kdkit.data.corpus import load_corpus, size_filter
from kdkit.data.pyfuncs import normalise_code
from kdkit.plugins.tasks.mutations import KINDS, mutate

#: Label names of the defect task, by ``target``.
LABELS = ("correct", "buggy")


class DefectBuildOptions(offline.SourceBuildOptions):
    """Options of the offline ``defect`` builder (``kdkit data build defect`` flags)."""

    kinds: list[str] = Field(
        default_factory=lambda: list(KINDS),
        description=f"the bug kinds (any of {', '.join(KINDS)}; commas or spaces between)",
        json_schema_extra={"metavar": "KIND"},
    )
    min_lines: int = Field(3, ge=1, description="skip shorter functions (lines)")
    max_lines: int = Field(
        40,
        ge=3,
        description="skip longer functions (lines; 40 keeps a function and its bug "
        "within about 512 student tokens)",
    )
    max_chars: int = Field(1600, ge=1, description="skip longer functions (characters)")
    max_functions: int | None = Field(
        None, ge=1, description="seeded cap on the functions used (each gives two rows)"
    )

    @field_validator("kinds", mode="before")
    @classmethod
    def _known_kinds(cls, value: Any) -> Any:
        """Split ``"a,b"`` items (a flag's value) and reject unknown kinds."""
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list | tuple):
            value = [k.strip() for v in value for k in str(v).split(",") if k.strip()]
            unknown = sorted(set(value) - set(KINDS))
            if unknown:
                raise ValueError(
                    f"unknown mutation kind(s) {unknown}; choose from {', '.join(KINDS)}"
                )
        return value


def build(
    out_dir: str | os.PathLike[str], options: DefectBuildOptions, *, quiet: bool = False
) -> offline.BuildReport:
    """Build Devign-format defect JSONL into ``out_dir`` (``train/valid/test.jsonl``, stats).

    Progress goes to stderr unless ``quiet``. Returns the :class:`~kdkit.data.build.BuildReport`.
    """
    o = options
    timer = offline.Timer()
    out = Path(out_dir)
    corpus = load_corpus(o, size_filter(o.min_lines, o.max_lines, o.max_chars), quiet)
    functions = corpus.sample(o.max_functions, o.seed)
    rng = random.Random(o.seed)
    items = []  # (group, key, correct row, buggy row)
    skipped = dict(corpus.skipped)
    no_site = duplicate = 0
    # Normalised texts already written (correct and buggy rows alike): the same function in two
    # places of one file, or a mutant that is another real function, would repeat a row (and a
    # mutant equal to a correct row would be one text with both labels).
    seen: set[str] = set()
    for sf, fn in functions:
        edit = mutate(fn, rng, tuple(o.kinds))
        if edit is None:
            no_site += 1
            continue
        keys = {normalise_code(fn.text), normalise_code(edit.apply(fn.text))}
        if len(keys) < 2 or keys & seen:
            duplicate += 1
            continue
        seen |= keys
        info = f"{sf.root}:{sf.rel} {fn.qualname}"
        correct = {
            "func": fn.text,
            "target": 0,
            "bug_kind": "none",
            "project": sf.root,
            "info": info,
        }
        buggy = {
            "func": edit.apply(fn.text),
            "target": 1,
            "bug_kind": edit.kind,
            "project": sf.root,
            "info": info,
        }
        items.append((sf.group(o.split_by), normalise_code(fn.text), correct, buggy))
    skipped["no_mutation_site"] = no_site
    skipped["duplicate_text"] = duplicate
    result = offline.split_by_group(
        items, lambda i: i[0], lambda i: i[1], o.seed, eval_allowed=o.eval_allowed
    )
    skipped["near_duplicate"] = result.duplicates_dropped
    rows: dict[str, list[dict[str, Any]]] = {}
    idx = 0
    for split, chosen in result.splits.items():
        rows[split] = []
        for _, _, correct, buggy in chosen:
            pair = idx // 2
            for row in (correct, buggy):
                rows[split].append({**row, "idx": idx, "pair": pair})
                idx += 1
    counts = {
        s: {LABELS[t]: n for t, n in sorted(Counter(r["target"] for r in rs).items())}
        for s, rs in rows.items()
    }
    bug_kinds = {
        s: dict(sorted(Counter(r["bug_kind"] for r in rs if r["target"]).items()))
        for s, rs in rows.items()
    }
    offline.check_size("defect", {s: len(r) for s, r in rows.items()}, o.min_examples)
    offline.write_split_jsonl(out, rows)
    report = offline.BuildReport(
        "defect",
        out,
        counts,
        skipped,
        corpus.sources,
        options={
            "kinds": list(o.kinds),
            "seed": o.seed,
            "split_by": o.split_by,
            "holdout": o.holdout_record(),
            "min_lines": o.min_lines,
            "max_lines": o.max_lines,
            "max_chars": o.max_chars,
            "max_functions": o.max_functions,
        },
        extra={"bug_kinds": bug_kinds},
    )
    return offline.finish_build(report, timer)
