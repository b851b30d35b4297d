"""Build the research exception corpus once: every masked handler of stdlib + kdkit's pinned
dependencies (their installed site-packages), with the hole's character offset, split by group
(stdlib: file; site-packages: package directory) with alpha-renaming near-duplicate removal;
plus every function text (for the BPE and for MLM pre-training).

Usage: python exc_data.py OUT_DIR [--stdlib-only]
Writes OUT_DIR/{handlers.jsonl, functions.txt, meta.json}.
"""

import importlib
import importlib.metadata as md
import json
import keyword
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path

from kdkit.data.builders.common import load_corpus, size_filter, split_by_group
from kdkit.data.builders.exception import HOLE, holes
from kdkit.data.pyfuncs import normalise_code

PINNED = [
    ("torch", "torch"),
    ("transformers", "transformers"),
    ("datasets", "datasets"),
    ("tokenizers", "tokenizers"),
    ("pluggy", "pluggy"),
    ("yaml", "PyYAML"),
    ("numpy", "numpy"),
    ("pydantic", "pydantic"),
    ("safetensors", "safetensors"),
    ("tqdm", "tqdm"),
    ("matplotlib", "matplotlib"),
    ("sklearn", "scikit-learn"),
]
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEEP = set(keyword.kwlist) | set(
    dir(__builtins__) if isinstance(__builtins__, dict) is False else __builtins__
)


def alpha_key(text: str) -> str:
    """Near-duplicate key robust to renaming: identifiers -> first-seen placeholders."""
    names: dict[str, str] = {}

    def sub(m):
        w = m.group(0)
        if w in _KEEP or w == HOLE:
            return w
        return names.setdefault(w, f"v{len(names)}")

    return _IDENT.sub(sub, normalise_code(text))


def main(out: Path, stdlib_only: bool) -> None:
    t0 = time.time()
    sources = ["stdlib"]
    versions = {}
    if not stdlib_only:
        for mod, dist in PINNED:
            m = importlib.import_module(mod)
            sources.append(os.path.dirname(m.__file__))
            versions[dist] = md.version(dist)
    corpus = load_corpus(sources, None, size_filter(2, 300, 20_000))
    print(
        f"parsed {corpus.files} files, {len(corpus.functions)} functions in {time.time() - t0:.0f}s",
        flush=True,
    )
    out.mkdir(parents=True, exist_ok=True)
    cands = []
    with open(out / "functions.txt", "w") as fh:
        for sf, fn in corpus.functions:
            fh.write(json.dumps(fn.text) + "\n")
            hs = holes(fn)
            if not hs:
                continue
            # site-packages: keep a package directory together (copied model files live side by side)
            group = (
                f"{sf.root}:{sf.rel}"
                if sf.root == "stdlib"
                else f"{sf.root}:{os.path.dirname(sf.rel)}"
            )
            key = alpha_key(fn.text)
            for label, start, end, line in hs:
                text = fn.text[:start] + HOLE + fn.text[end:]
                cands.append(
                    (
                        group,
                        key,
                        {
                            "text": text,
                            "hole": start,
                            "line": line,
                            "label": label,
                            "src": "stdlib" if sf.root == "stdlib" else "site",
                            "info": f"{sf.root}:{sf.rel} {fn.qualname}",
                        },
                    )
                )
    res = split_by_group(cands, lambda c: c[0], lambda c: c[1], 0)
    seen, n = set(), Counter()
    with open(out / "handlers.jsonl", "w") as fh:
        for split, items in res.splits.items():
            for _, _, row in items:
                k = alpha_key(row["text"])
                if k in seen:
                    continue
                seen.add(k)
                n[split] += 1
                fh.write(json.dumps({**row, "split": split}) + "\n")
    meta = {
        "sources": sources,
        "versions": versions,
        "python": sys.version,
        "counts": n,
        "duplicates_dropped": res.duplicates_dropped,
        "functions": len(corpus.functions),
        "seconds": round(time.time() - t0, 1),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    print(json.dumps(meta), flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), "--stdlib-only" in sys.argv)
