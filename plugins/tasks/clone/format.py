"""The BigCloneBench / CodeXGLUE clone format: ``data.jsonl`` (``idx``, ``func`` per function) and
``train.txt``/``valid.txt``/``test.txt`` with ``idx1<TAB>idx2<TAB>label`` per line (any whitespace
accepted); or, when there is no ``data.jsonl``, pair JSONL files with ``func1``, ``func2``,
``target`` (or ``label``).

An ``idx`` given twice in ``data.jsonl`` with different code is an error naming both lines (which
function a pair meant cannot be known); given twice with the same code it is harmless."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kdkit.data.formats import (
    SPLITS,
    Rows,
    as_binary,
    field,
    find_split_files,
    id_field,
    iter_jsonl,
    iter_text_lines,
    read_json_rows,
    text_field,
)
from kdkit.errors import KdkitError, shorten


def pair_row(obj: dict[str, Any], where: str) -> dict[str, Any]:
    """A pair JSONL object (``func1``, ``func2``, ``target``/``label``) -> ``{text, text_pair, label}``."""
    return {
        "text": text_field(obj, ("func1",), where),
        "text_pair": text_field(obj, ("func2",), where),
        "label": as_binary(field(obj, ("target", "label"), where), where),
    }


def read_bigclonebench(
    data_dir: Path, explicit: Mapping[str, str | None], hint: str
) -> tuple[Rows, list[Path]]:
    """BigCloneBench: ``data.jsonl`` + ``*.txt`` pair files, or pair JSONL files if no data.jsonl."""
    functions_file = data_dir / "data.jsonl"
    if not functions_file.is_file():
        if data_dir.is_dir() and any(data_dir.glob("train*.json*")):
            return read_json_rows(data_dir, explicit, pair_row, hint)
        raise KdkitError(
            f"no data.jsonl (BigCloneBench) or train.jsonl (pair JSONL) in {data_dir}",
            where=str(data_dir),
            fix=f"point data_dir at CodeXGLUE's Clone-detection-BigCloneBench/dataset, or {hint}",
        )
    code: dict[str, str] = {}
    line_of: dict[str, int] = {}
    for n, obj in iter_jsonl(functions_file):
        where = f"{functions_file}:{n}"
        idx, func = id_field(obj, ("idx",), where), text_field(obj, ("func",), where)
        if idx in code and code[idx] != func:
            raise KdkitError(
                f"idx {shorten(idx)!r} is given twice with different code (lines "
                f"{line_of[idx]} and {n})",
                where=where,
                fix="give every function its own idx (the pair files name functions by idx)",
            )
        code.setdefault(idx, func)
        line_of.setdefault(idx, n)
    rows: Rows = {}
    used = [functions_file]
    for split in SPLITS:
        files = find_split_files(data_dir, split, (".txt",), explicit.get(split), hint)
        used.extend(files)
        rows[split] = []
        for path in files:
            for n, line in iter_text_lines(path):
                parts = line.split()
                if not parts:
                    continue
                where = f"{path}:{n}"
                if len(parts) != 3:
                    raise KdkitError(
                        f"expected 'idx1 idx2 label', got {shorten(line.strip())!r}",
                        where=where,
                        fix="one pair per line, tab-separated",
                    )
                a, b, label = parts
                for idx in (a, b):
                    if idx not in code:
                        raise KdkitError(
                            f"idx {shorten(idx)!r} is not in {functions_file.name}",
                            where=where,
                            fix="use the data.jsonl of the same release",
                        )
                rows[split].append(
                    {"text": code[a], "text_pair": code[b], "label": as_binary(label, where)}
                )
    return rows, used
