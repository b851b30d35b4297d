"""Where kdkit keeps its caches (datasets, tokenizers, built offline data, teacher outputs)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root(override: str | os.PathLike[str] | None = None) -> Path:
    """The root of every kdkit cache.

    Order: ``override`` (e.g. the run file's ``cache.dir``), then the ``KDKIT_CACHE`` environment
    variable, then ``~/.cache/kdkit``. The directory is not created here; writers create the
    sub-directory they own (``datasets/``, ``tokenizers/``, ``built/``, ...).
    """
    if override:
        return Path(override).expanduser()
    env = os.environ.get("KDKIT_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "kdkit"
