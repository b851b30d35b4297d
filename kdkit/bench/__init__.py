"""``kdkit bench``: fused losses vs eager PyTorch, ``torch.compile`` and other libraries.

An op is described by a :class:`BenchOp` (providers, shapes, minimal bytes/FLOPs, a float64
reference). Plugins register theirs through the ``register_bench_ops`` hook; :func:`load_ops`
collects them (kdkit's own come from ``kdkit.kernels.plugin``).
"""

from __future__ import annotations

from typing import Any

from kdkit.bench.op import MODES, BenchOp, Provider, total_loss

__all__ = ["MODES", "BenchOp", "Provider", "load_ops", "total_loss"]


def load_ops() -> dict[str, BenchOp]:
    """Every registered bench op by name: through the plugin registry, or kdkit's built-ins
    directly when discovery is unavailable."""
    ops: dict[str, BenchOp] = {}
    try:
        from kdkit.discovery import load_plugins

        plugins = load_plugins()
        for name in plugins.registry.names("bench_op"):
            comp = plugins.registry.get("bench_op", name)
            ops[name] = comp.build(comp.options(), None)
    except ImportError:
        pass
    if not ops:
        from kdkit.kernels.plugin import builtin_ops

        ops = {op.name: op for op in builtin_ops()}
    return ops


def describe(ops: dict[str, BenchOp]) -> list[dict[str, Any]]:
    """A short listing of ops and providers (for ``kdkit bench --list``)."""
    return [
        {"op": op.name, "description": op.description, "providers": [p.name for p in op.providers]}
        for op in ops.values()
    ]
