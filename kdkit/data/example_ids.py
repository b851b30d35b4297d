"""Stable example ids of a task's split rows: how teacher outputs made elsewhere find their rows.

A task's prepared rows are ``text``, ``label`` (and ``text_pair`` for pair tasks): the public
formats' own ids (Devign's ``idx``, BigCloneBench's function ids) do not survive loading, and
in-memory or CSV data may have none. So kdkit gives every row a *content id*, the same on every
machine and for every task: the first 8 bytes of ``sha256(json.dumps([text, text_pair, n]))``
read as a big-endian integer and shifted right by one bit (a non-negative int64), where
``text_pair`` is ``null`` for single-text tasks and ``n`` counts the earlier rows of the same split
with the same ``text`` and ``text_pair`` (0 for the first). The label plays no part (a teacher
never sees it), and repeated rows still get distinct ids.

``json.dumps`` is Python's default (``ensure_ascii=True``, ``", "`` separators), so another
language reproduces the id from those bytes; :func:`example_ids` is the reference.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any


def content_id(text: str, text_pair: str | None = None, occurrence: int = 0) -> int:
    """The content id of one row (see the module docstring): a non-negative 63-bit integer."""
    raw = json.dumps([text, text_pair, occurrence]).encode("utf-8")
    return int.from_bytes(hashlib.sha256(raw).digest()[:8], "big") >> 1


def ids_of_rows(texts: Sequence[str], pairs: Iterable[str | None] | None = None) -> list[int]:
    """Content ids of rows in split order (``pairs``: the second texts of a pair task)."""
    seen: dict[tuple[str, str | None], int] = {}
    out = []
    for text, pair in zip(texts, pairs if pairs is not None else [None] * len(texts), strict=True):
        n = seen.get((text, pair), 0)
        seen[(text, pair)] = n + 1
        out.append(content_id(text, pair, n))
    return out


def example_ids(split: Any) -> list[int]:
    """Content ids of every row of a prepared split (a ``datasets.Dataset`` with ``text`` and,
    for a pair task, ``text_pair``), in row order: ``example_ids(task.load()["train"])``."""
    pairs = split["text_pair"] if "text_pair" in split.column_names else None
    return ids_of_rows(split["text"], pairs)
