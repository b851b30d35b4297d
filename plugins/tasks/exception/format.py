"""The CuBERT exception-classification format: JSON lines with ``function`` (the source with the
``except`` type replaced by ``__HOLE__``) and a string ``label``; ``info`` is ignored. Files
``train*``, ``dev*``/``valid*``, ``eval*``/``test*`` (``.jsonl``, ``.jsontxt``, sharded files)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kdkit.data.formats import Rows, read_json_rows, text_field


def cubert_row(obj: dict[str, Any], where: str) -> dict[str, Any]:
    """A CuBERT exception object -> ``{text, label}`` (both strings: an int or a dict is refused,
    never turned into text)."""
    return {
        "text": text_field(obj, ("function",), where),
        "label": text_field(obj, ("label",), where),
    }


def read_cubert(
    data_dir: Path, explicit: Mapping[str, str | None], hint: str
) -> tuple[Rows, list[Path]]:
    """CuBERT exception-classification JSONL splits, and the files read."""
    return read_json_rows(data_dir, explicit, cubert_row, hint)
