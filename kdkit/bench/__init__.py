"""``kdkit bench``: fused losses vs eager PyTorch, ``torch.compile`` and other libraries.

An op is described by a :class:`BenchOp` (providers, shapes, minimal bytes/FLOPs, a float64
reference). Plugins register theirs through the ``register_bench_ops`` hook; :func:`load_ops`
collects them from the plugin registry (kdkit's own come from the ``kernels`` plugin,
``kdkit.kernels.plugin``, like any third party's).
"""

from __future__ import annotations

from typing import Any

from kdkit.bench.op import MODES, BenchOp, Provider, total_loss

__all__ = ["MODES", "BenchOp", "Provider", "load_ops", "total_loss"]


def load_ops(plugins: Any = None) -> dict[str, BenchOp]:
    """Every registered bench op by name, built through the plugin registry.

    There is no fallback to a built-in list: a plugin whose ``register_bench_ops`` hook fails is
    reported (here on stderr, and by ``kdkit plugins``) and its ops are missing.

    Args:
        plugins: loaded plugins (:func:`kdkit.discovery.load_plugins`); default: load them.
    """
    import sys

    from kdkit.discovery import load_plugins

    plugins = plugins if plugins is not None else load_plugins()
    for f in plugins.failures:
        print(
            f"kdkit: warning: plugin '{f.plugin}' ({f.distribution}) failed to load, so any "
            f"bench op it registers is missing: {f.error} (fix: {f.fix})",
            file=sys.stderr,
        )
    ops: dict[str, BenchOp] = {}
    for name in plugins.registry.names("bench_op"):
        comp = plugins.registry.get("bench_op", name)
        ops[name] = comp.build(comp.options(), None)
    return ops


def describe(ops: dict[str, BenchOp]) -> list[dict[str, Any]]:
    """A short listing of ops and providers (for ``kdkit bench --list``)."""
    return [
        {"op": op.name, "description": op.description, "providers": [p.name for p in op.providers]}
        for op in ops.values()
    ]
