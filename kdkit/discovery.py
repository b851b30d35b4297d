"""Plugin discovery: entry points of the ``kdkit`` group, loaded with failures isolated.

Use :func:`load_plugins` (a factory; there is no module-level plugin manager)::

    plugins = load_plugins()
    method = plugins.registry.get("kd_method", "kd")

Every hook is called through pluggy (``pm.hook.<name>`` or ``pm.subset_hook_caller``), never by
calling an implementation directly, so pluggy's tracing and monitoring see every call.

Environment variables (the exact rules are in ``docs/plugins.md``):

* ``KDKIT_PLUGINS=a,b``: load kdkit's own plugins (every entry point of the distribution
  ``kdkit``) plus the third-party plugins ``a`` and ``b``; other third-party plugins are skipped.
  ``KDKIT_PLUGINS=only:a,b`` loads exactly ``a`` and ``b`` (built-ins only if named).
* ``KDKIT_DISABLE_PLUGINS=a,b``: never load these plugins (built-in or not); applied last.
* ``KDKIT_TRACE_HOOKS=1``: print every plugin registration and hook call (with its arguments
  and result) to stderr, prefixed ``kdkit-trace:``.
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
from kdkit.registry import (
    KINDS,
    PluginCommand,
    PluginFailure,
    PluginOrigin,
    Registry,
    make_add_command,
    make_register,
)

GROUP = "kdkit"
#: The distribution whose plugins are kdkit's own (the built-ins).
BUILTIN_DISTRIBUTION = "kdkit"
#: The hook that adds CLI sub-commands (not a component kind: see :class:`PluginCommand`).
COMMAND_HOOK = "register_commands"
#: ``KDKIT_PLUGINS`` prefix meaning "exactly these plugins, built-ins included only if named".
ONLY_PREFIX = "only:"


def _names(raw: str) -> set[str]:
    return {p.strip() for p in raw.split(",") if p.strip()}


@dataclass(frozen=True)
class Selection:
    """Which entry points to load: the rule of ``KDKIT_PLUGINS`` / ``KDKIT_DISABLE_PLUGINS``.

    Attributes:
        allow: plugin names to load (``None``: every installed plugin).
        keep_builtins: with ``allow`` set, also load every plugin of :data:`BUILTIN_DISTRIBUTION`.
        block: plugin names never loaded, whatever ``allow`` says.
    """

    allow: frozenset[str] | None = None
    keep_builtins: bool = True
    block: frozenset[str] = frozenset()

    @classmethod
    def from_env(cls) -> Selection:
        """The selection ``KDKIT_PLUGINS`` and ``KDKIT_DISABLE_PLUGINS`` describe."""
        raw = os.environ.get("KDKIT_PLUGINS", "").strip()
        block = frozenset(_names(os.environ.get("KDKIT_DISABLE_PLUGINS", "")))
        if not raw:
            return cls(None, True, block)
        if raw.startswith(ONLY_PREFIX):
            return cls(frozenset(_names(raw[len(ONLY_PREFIX) :])), False, block)
        return cls(frozenset(_names(raw)), True, block)

    def wants(self, plugin: str, distribution: str) -> bool:
        """Whether the entry point ``plugin`` of ``distribution`` is loaded."""
        if plugin in self.block:
            return False
        if self.allow is None or plugin in self.allow:
            return True
        return self.keep_builtins and distribution == BUILTIN_DISTRIBUTION


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

    @property
    def commands(self) -> dict[str, PluginCommand]:
        """Sub-commands added by plugins (``register_commands``), by name."""
        return self.registry.commands

    def notify(self, hook: str, **kwargs: Any) -> None:
        """Call an observe-only lifecycle hook on every plugin, through pluggy.

        Each implementation is called through a pluggy caller restricted to its plugin
        (:func:`plugin_caller`), so tracing and monitoring see the call and a plugin that raises
        is reported on stderr while the others still run: observers must not be able to stop
        (or steer) a run.
        """
        impls = getattr(self.pm.hook, hook).get_hookimpls()
        if not impls:  # nobody observes: still a pluggy call, so a trace shows the event
            getattr(self.pm.hook, hook)(**kwargs)
        for impl in impls:
            try:
                plugin_caller(self.pm, hook, impl.plugin)(**kwargs)
            except Exception as exc:  # observers are isolated by design
                print(
                    f"kdkit: warning: plugin '{impl.plugin_name}' raised in {hook}: "
                    f"{type(exc).__name__}: {exc}",
                    file=sys.stderr,
                )


def plugin_caller(pm: pluggy.PluginManager, hook: str, plugin: object) -> Any:
    """A pluggy caller of ``hook`` that reaches only ``plugin``'s implementation.

    Calling it goes through the plugin manager (``pm.subset_hook_caller``), so
    ``KDKIT_TRACE_HOOKS`` and any hook-call monitor see it, unlike calling
    ``impl.function`` directly.
    """
    others = [p for p in pm.get_plugins() if p is not plugin]
    return pm.subset_hook_caller(hook, remove_plugins=others)


def _trace_writer(message: str) -> None:
    """Write a pluggy trace message with every line prefixed (arguments come on extra lines)."""
    sys.stderr.write("".join(f"kdkit-trace: {line}\n" for line in message.splitlines()))


def _implements(pm: pluggy.PluginManager, hook: str, plugin: object) -> bool:
    return any(i.plugin is plugin for i in getattr(pm.hook, hook).get_hookimpls())


def _collect(pm: pluggy.PluginManager, plugin: object, origin: PluginOrigin) -> Registry:
    """Run one plugin's registration hooks through pluggy; what it registers, staged.

    The staged registry is merged into the real one only when every hook of the plugin
    succeeded, so a plugin that fails half-way leaves nothing behind.
    """
    staged = Registry()
    for kind, hook in KINDS.items():
        if _implements(pm, hook, plugin):
            plugin_caller(pm, hook, plugin)(register=make_register(staged, kind, origin))
    if _implements(pm, COMMAND_HOOK, plugin):
        plugin_caller(pm, COMMAND_HOOK, plugin)(add_command=make_add_command(staged, origin))
    return staged


def _failure(origin: PluginOrigin, exc: BaseException, fix: str | None = None) -> PluginFailure:
    skip = f"KDKIT_DISABLE_PLUGINS={origin.plugin}"
    if isinstance(exc, KdkitError):  # an invalid registration: kdkit's own what and fix
        error = f"{type(exc).__name__}: {exc.what}"
        fix = f"{exc.fix}; or skip the plugin with {skip}" if exc.fix else None
    else:
        error = f"{type(exc).__name__}: {exc}"
    return PluginFailure(
        origin.plugin,
        origin.distribution,
        origin.version,
        error,
        fix or f"fix or upgrade {origin.distribution}, or skip it with {skip}",
    )


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
        allow: exactly these plugin names (built-ins included only if named); default: the
            rule of ``KDKIT_PLUGINS`` (see :class:`Selection`).
        block: never these plugin names (default: ``KDKIT_DISABLE_PLUGINS``).
        distributions: only plugins from these distributions (tests use ``{"kdkit"}``).
        extra: ``(name, module_or_object)`` plugins to register in-process (tests, notebooks);
            neither ``allow`` nor ``block`` applies to them.
        trace: print registrations and hook calls to stderr (default: ``KDKIT_TRACE_HOOKS``).

    Returns:
        The plugin manager and a registry of every component. A plugin that fails to import or
        to register (an exception in a registration hook, an invalid name or options model) is
        recorded in ``registry.failures``, keeps none of its registrations and does not stop the
        others. A name two plugins register is recorded in ``registry.collisions`` and is
        unusable; the other names keep working.
    """
    env = Selection.from_env()
    selection = Selection(
        frozenset(allow) if allow is not None else env.allow,
        env.keep_builtins if allow is None else False,
        frozenset(block) if block is not None else env.block,
    )
    dist_set = set(distributions) if distributions is not None else None
    if trace is None:
        trace = os.environ.get("KDKIT_TRACE_HOOKS", "") not in ("", "0")

    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    if trace:
        pm.trace.root.setwriter(_trace_writer)
        pm.enable_tracing()
    trace_register = pm.trace.get("register")  # writes only while tracing is on
    registry = Registry()
    plugins = Plugins(pm, registry)

    def _dist(ep: metadata.EntryPoint) -> tuple[str, str]:
        return (ep.dist.name, ep.dist.version) if ep.dist is not None else ("unknown", "?")

    # kdkit's own plugins first: they are the incumbents when a third party reuses a name
    eps = sorted(
        metadata.entry_points(group=GROUP),
        key=lambda e: (_dist(e)[0] != BUILTIN_DISTRIBUTION, e.name),
    )
    candidates: list[tuple[PluginOrigin, Any]] = []
    taken: dict[str, str] = {}  # plugin name -> distribution that has it
    for ep in eps:
        dist, version = _dist(ep)
        if not selection.wants(ep.name, dist):
            continue
        if dist_set is not None and dist not in dist_set:
            continue
        origin = PluginOrigin(ep.name, dist, version)
        if ep.name in taken:
            if taken[ep.name] != dist:  # (the same distribution seen twice on sys.path is fine)
                registry.failures.append(
                    PluginFailure(
                        ep.name,
                        dist,
                        version,
                        f"the plugin name '{ep.name}' is already used by {taken[ep.name]}",
                        f"rename the entry point '{ep.name}' in {dist}'s [project.entry-points.kdkit] "
                        f"and re-install it, or pip uninstall {dist}",
                    )
                )
            continue
        taken[ep.name] = dist
        try:
            candidates.append((origin, ep.load()))
        except Exception as exc:  # isolate import failures: record them with a fix
            if os.environ.get("KDKIT_DEBUG"):
                traceback.print_exc()
            registry.failures.append(_failure(origin, exc, _fix_for(exc, ep, dist)))
    for name, obj in extra:
        candidates.append((PluginOrigin(name, "<in-process>", ""), obj))

    for origin, obj in candidates:
        try:
            trace_register(f"plugin {origin.plugin} ({origin.distribution} {origin.version})")
            pm.register(obj, name=origin.plugin)
            staged = _collect(pm, obj, origin)
        except Exception as exc:  # a broken registration: drop the plugin, keep the others
            if os.environ.get("KDKIT_DEBUG"):
                traceback.print_exc()
            if pm.is_registered(obj):
                pm.unregister(obj)
            registry.failures.append(_failure(origin, exc))
            continue
        registry.merge(staged)
        plugins.origins[origin.plugin] = origin
    return plugins
