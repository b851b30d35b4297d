"""kdkit: knowledge distillation of code-understanding models.

For notebooks and scripts: :func:`distill` (one run, its sections as keyword arguments),
:func:`configure` (the same validation, no run) and :func:`load_model` (a saved student, for
inference) — docs/python-api.md.
The public surface for plugin authors is :mod:`kdkit.api` (contracts), :data:`hookimpl` and
:mod:`kdkit.hookspecs` (the hooks), and :mod:`kdkit.testing` (the conformance suite).
"""

from typing import Any

from kdkit.hookspecs import hookimpl

__version__ = "0.1.0"

#: The Python API's names, imported on first use (``import kdkit`` does not load the engine).
_LAZY = {
    "distill": "kdkit.python_api",
    "configure": "kdkit.python_api",
    "load_model": "kdkit.python_api",
    "DistillResult": "kdkit.python_api",
    "Model": "kdkit.python_api",
    "TrainingConfig": "kdkit.config",
    "CacheConfig": "kdkit.config",
    "KernelsConfig": "kdkit.config",
}

__all__ = ["__version__", "hookimpl", *_LAZY]


def __getattr__(name: str) -> Any:
    """The Python API's names (:data:`_LAZY`), imported when first used."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kdkit' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
