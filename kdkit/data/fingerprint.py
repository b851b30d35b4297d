"""Stable content fingerprints: they key the dataset, tokenizer and built-data caches."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: Bump when the on-disk layout of a cache entry changes, so stale entries are never reused.
FORMAT_VERSION = 3  # 2: defect builds carry `pair`; 3: evaluation splits from held-out files


def hash_json(value: Any) -> str:
    """SHA-256 (hex, first 16 chars) of a JSON-serialisable value, with sorted keys."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def hash_files(paths: Iterable[str | Path]) -> str:
    """SHA-256 (hex, first 16 chars) of the names and bytes of ``paths``, in the given order."""
    digest = hashlib.sha256()
    for path in paths:
        path = Path(path)
        digest.update(path.name.encode("utf-8") + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def hash_texts(texts: Iterable[str]) -> str:
    """SHA-256 (hex, first 16 chars) of a sequence of strings (order matters)."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    return digest.hexdigest()[:16]
