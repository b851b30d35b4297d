"""Plugin discovery: entry points of the ``kdkit`` group, loaded with failures isolated.

Use :func:`load_plugins` (a factory; there is no module-level plugin manager)::

    plugins = load_plugins()
    method = plugins.registry.get("kd_method", "kd")

Environment variables:

* ``KDKIT_PLUGINS``: comma-separated allow-list of plugin (entry-point) names; others are skipped.
* ``KDKIT_DISABLE_PLUGINS``: comma-separated block-list of plugin names.
* ``KDKIT_TRACE_HOOKS=1``: print every hook call and its result to stderr.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import Any

import pluggy

from kdkit import hookspecs
from kdkit.errors import KdkitError
from kdkit.registry import KINDS, PluginFailure, PluginOrigin, Registry, make_register

GROUP = "kdkit"


def _env_list(name: str) -> set[str] | None:
    raw = os.environ.get(name, "").strip()
    return {p.strip() for p in raw.split(",") if p.strip()} or None if raw else None


def _fix_for(exc: BaseException, ep: metadata.EntryPoint, dist: str) -> str:
    """A concrete suggestion for a plugin that failed to import."""
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        top = exc.name.split(".")[0]
        if ep.value.split(".")[0] == top or ep.value.startswith(exc.name):
            return (
                f"the module '{exc.name}' named by entry point '{ep.name} = {ep.value}' is not "
                f"installed: re-install the distribution (pip install -e . or pip install "
                f"--force-reinstall {dist})"
            )
        return f"install the missing dependency: pip install {top}"
    if isinstance(exc, AttributeError):
        return f"the entry point '{ep.name} = {ep.value}' names something that does not exist: fix the distribution's entry points and re-install it"
    return (
        f"fix or upgrade {dist}, or skip it with KDKIT_DISABLE_PLUGINS={ep.name} "
        "(set KDKIT_DEBUG=1 to see the traceback)"
    )


@dataclass
class Plugins:
    """A loaded plugin manager, the registry it filled, and the plugins that failed."""

    pm: pluggy.PluginManager
    registry: Registry
    origins: dict[str, PluginOrigin] = field(default_factory=dict)

    @property
    def failures(self) -> list[PluginFailure]:
        """Plugins that failed to import or to register their components."""
        return self.registry.failures

    def notify(self, hook: str, **kwargs: Any) -> None:
        """Call an observe-only lifecycle hook on every plugin.

        A plugin that raises is reported on stderr and the run goes on: observers must not be
        able to stop (or steer) a run.
        """
        caller = getattr(self.pm.hook, hook)
        for impl in caller.get_hookimpls():
            try:
                impl.function(**{a: kwargs[a] for a in impl.argnames})
            except Exception as exc:  # observers are isolated by design
                print(
                    f"kdkit: warning: plugin '{impl.plugin_name}' raised in {hook}: "
                    f"{type(exc).__name__}: {exc}",
                    file=sys.stderr,
                )


def _collect(pm: pluggy.PluginManager, name: str, origin: PluginOrigin, registry: Registry) -> None:
    """Run one plugin's registration hooks, recording which plugin registered what."""
    for kind, hook in KINDS.items():
        for impl in getattr(pm.hook, hook).get_hookimpls():
            if impl.plugin_name != name:
                continue
            register = make_register(registry, kind, origin)
            impl.function(**{a: register for a in impl.argnames})


def load_plugins(
    *,
    allow: Iterable[str] | None = None,
    block: Iterable[str] | None = None,
    distributions: Iterable[str] | None = None,
    extra: Iterable[tuple[str, ModuleType | object]] = (),
    trace: bool | None = None,
) -> Plugins:
    """Discover and load the plugins of the ``kdkit`` entry-point group.

    Args:
        allow: only these plugin names (default: ``KDKIT_PLUGINS`` or all).
        block: never these plugin names (default: ``KDKIT_DISABLE_PLUGINS``).
        distributions: only plugins from these distributions (tests use ``{"kdkit"}``).
        extra: ``(name, module_or_object)`` plugins to register in-process (tests, notebooks).
        trace: print hook calls to stderr (default: ``KDKIT_TRACE_HOOKS``).

    Returns:
        The plugin manager and a registry of every component. A plugin that fails to import or
        to register is recorded in ``registry.failures`` and does not stop the others;
        a duplicate component name raises :class:`kdkit.errors.PluginError`.
    """
    allow_set = set(allow) if allow is not None else _env_list("KDKIT_PLUGINS")
    block_set = set(block) if block is not None else (_env_list("KDKIT_DISABLE_PLUGINS") or set())
    dist_set = set(distributions) if distributions is not None else None
    if trace is None:
        trace = os.environ.get("KDKIT_TRACE_HOOKS", "") not in ("", "0")

    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    if trace:
        pm.trace.root.setwriter(lambda msg: sys.stderr.write(f"kdkit-trace: {msg}"))
        pm.enable_tracing()
    registry = Registry()
    plugins = Plugins(pm, registry)

    candidates: list[tuple[str, PluginOrigin, Any]] = []
    seen: set[str] = set()
    for ep in sorted(metadata.entry_points(group=GROUP), key=lambda e: e.name):
        dist = ep.dist.name if ep.dist is not None else "unknown"
        version = ep.dist.version if ep.dist is not None else "?"
        if ep.name in seen:  # the same distribution seen twice on sys.path
            continue
        seen.add(ep.name)
        if (allow_set is not None and ep.name not in allow_set) or ep.name in block_set:
            continue
        if dist_set is not None and dist not in dist_set:
            continue
        origin = PluginOrigin(ep.name, dist, version)
        try:
            candidates.append((ep.name, origin, ep.load()))
        except Exception as exc:  # isolate import failures: record them with a fix
            if os.environ.get("KDKIT_DEBUG"):
                traceback.print_exc()
            registry.failures.append(
                PluginFailure(
                    ep.name, dist, version, f"{type(exc).__name__}: {exc}", _fix_for(exc, ep, dist)
                )
            )
    for name, obj in extra:
        candidates.append((name, PluginOrigin(name, "<in-process>", ""), obj))

    for name, origin, obj in candidates:
        try:
            pm.register(obj, name=name)
            _collect(pm, name, origin, registry)
        except KdkitError:
            raise  # duplicate names and invalid registrations are errors of the installation
        except Exception as exc:
            if os.environ.get("KDKIT_DEBUG"):
                traceback.print_exc()
            if pm.is_registered(obj):
                pm.unregister(obj)
            registry.failures.append(
                PluginFailure(
                    name,
                    origin.distribution,
                    origin.version,
                    f"{type(exc).__name__}: {exc}",
                    f"fix or upgrade {origin.distribution}, or skip it with "
                    f"KDKIT_DISABLE_PLUGINS={name}",
                )
            )
            continue
        plugins.origins[name] = origin
    return plugins
