"""The distillation engine: training loop, checkpoints and resume, teacher cache, summaries.

* :func:`run` — one run from a resolved configuration (``kdkit run FILE``).
* :func:`kdkit.engine.default_job.run_default_job` — the offline default job (``kdkit run``).
* :mod:`kdkit.engine.loop` — the training loop; :mod:`kdkit.engine.teacher_cache` — the cache.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from kdkit.config import ResolvedConfig
    from kdkit.discovery import Plugins


def run(
    resolved: ResolvedConfig, plugins: Plugins, resume: str | None = None, **kwargs: Any
) -> int:
    """Run one resolved configuration (see :func:`kdkit.engine.runner.run`)."""
    from kdkit.engine.runner import run as _run

    return _run(resolved, plugins, resume=resume, **kwargs)


__all__ = ["run"]
