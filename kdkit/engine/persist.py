"""Reloading saved models, and writing files atomically.

A saved model directory holds ``kdkit.json`` (``kind``: ``hf`` or ``gru``), the weights in
safetensors and the tokenizer. :func:`load_student` rebuilds whichever kind it finds.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from kdkit.errors import KdkitError


def atomic_dir(target: str | Path, write) -> None:
    """Write a directory atomically: ``write(tmp_dir)`` then rename it over ``target``.

    A reader (or a resumed run) sees the old directory or the complete new one, never a half
    written one, even if the process is killed mid-write.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp", dir=target.parent))
    try:
        write(str(tmp))
        old = target.with_name(f".{target.name}.old")
        if target.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(target, old)
        os.replace(tmp, target)
        if old.exists():
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically (write a sibling, then ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def find_model_dir(path: str | Path) -> Path:
    """A model directory from a model directory or a run directory (its best, else last model)."""
    p = Path(path)
    for cand in (p, p / "best" / "model", p / "last" / "model", p / "model"):
        if (cand / "kdkit.json").is_file():
            return cand
    raise KdkitError(
        f"no saved kdkit model in {p}",
        where=str(p),
        fix="pass a run directory of a finished run (it has best/model/) or a directory written "
        "by Student.save / `kdkit teach`",
    )


def load_student(path: str | Path):
    """Reload a saved student (or kdkit-trained teacher) for inference or further training."""
    directory = find_model_dir(path)
    meta = json.loads((directory / "kdkit.json").read_text(encoding="utf-8"))
    if meta.get("kind") == "gru":
        from kdkit.plugins.students.gru import load_gru_student

        return load_gru_student(str(directory))
    from kdkit.engine.hf_model import load_hf_classifier

    return load_hf_classifier(str(directory))
