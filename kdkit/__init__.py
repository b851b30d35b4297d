"""kdkit: knowledge distillation of code-understanding models.

The public surface for plugin authors is :mod:`kdkit.api` (contracts), :data:`hookimpl` and
:mod:`kdkit.hookspecs` (the hooks), and :mod:`kdkit.testing` (the conformance suite).
"""

from kdkit.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["__version__", "hookimpl"]
