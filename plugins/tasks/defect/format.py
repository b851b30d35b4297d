"""The Devign / CodeXGLUE defect format: ``train.jsonl``, ``valid.jsonl``, ``test.jsonl`` with
``func`` (code), ``target`` (0/1) and ``idx`` per line (other fields are ignored)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kdkit.data.formats import Rows, as_binary, field, read_json_rows, text_field


def devign_row(obj: dict[str, Any], where: str) -> dict[str, Any]:
    """A Devign/CodeXGLUE defect object -> ``{text, label}``, plus ``pair`` where the object has
    one (kdkit's offline build: the id shared by a function and its mutant, so subsampling can
    keep them together)."""
    row = {
        "text": text_field(obj, ("func",), where),
        "label": as_binary(field(obj, ("target", "label"), where), where),
    }
    if obj.get("pair") is not None:
        row["pair"] = str(obj["pair"])
    return row


def read_devign(
    data_dir: Path, explicit: Mapping[str, str | None], hint: str
) -> tuple[Rows, list[Path]]:
    """Devign/CodeXGLUE defect JSONL splits, and the files read."""
    return read_json_rows(data_dir, explicit, devign_row, hint)
