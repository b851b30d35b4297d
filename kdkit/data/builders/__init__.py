"""Offline dataset builders: real Python code on this machine -> the public formats.

* :mod:`kdkit.data.builders.exception` — CuBERT exception classification JSONL;
* :mod:`kdkit.data.builders.defect` — Devign/CodeXGLUE defect JSONL (synthetic bugs);
* :mod:`kdkit.data.builders.clone` — BigCloneBench/CodeXGLUE ``data.jsonl`` + pair files.

Each module exposes ``build(out_dir, sources, ...) -> BuildReport``; :data:`BUILDERS` maps task
names to them (``kdkit data build TASK`` uses it).
"""

from __future__ import annotations

import importlib
from typing import Any

#: Task name -> module holding its ``build`` function.
BUILDERS = {
    "exception": "kdkit.data.builders.exception",
    "defect": "kdkit.data.builders.defect",
    "clone": "kdkit.data.builders.clone",
}


def get_builder(task: str) -> Any:
    """The ``build`` function of ``task``'s offline builder."""
    from kdkit.errors import KdkitError

    if task not in BUILDERS:
        raise KdkitError(
            f"no offline builder for task {task!r}",
            where="kdkit data build",
            fix=f"choose one of: {', '.join(BUILDERS)}",
        )
    return importlib.import_module(BUILDERS[task]).build
