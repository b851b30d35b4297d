"""Named components collected from the registration hooks, with "did you mean" lookup."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from kdkit.api import NoOptions, Options
from kdkit.errors import KdkitError, PluginError

#: Component kinds, in the order ``kdkit plugins`` lists them, with the hook that registers each.
KINDS: dict[str, str] = {
    "task": "register_tasks",
    "teacher": "register_teachers",
    "student": "register_students",
    "kd_method": "register_kd_methods",
    "reporter": "register_reporters",
    "bench_op": "register_bench_ops",
}

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


@dataclass(frozen=True)
class PluginOrigin:
    """Where a component came from: the plugin (entry-point name) and its distribution."""

    plugin: str
    distribution: str
    version: str


@dataclass(frozen=True)
class Component:
    """A registered component: how to build it, its options model, and its origin.

    ``load`` (models only) rebuilds a model this component saved: ``load(directory) -> Student``.
    ``trainable`` (teachers only) gives the model ``kdkit teach`` fine-tunes:
    ``trainable(options, context) -> Student``. Both are ``None`` when the plugin gave none.
    """

    kind: str
    name: str
    factory: Callable[..., Any]
    config: type[Options]
    description: str
    origin: PluginOrigin
    load: Callable[[str], Any] | None = None
    trainable: Callable[..., Any] | None = None

    def options(self, values: dict[str, Any] | None = None) -> Options:
        """Validate ``values`` against the component's options model."""
        return self.config(**(values or {}))

    def build(self, options: Options, context: Any) -> Any:
        """Call the factory; failures inside a plugin are reported with the plugin named."""
        return self._call(self.factory, "build", options, context)

    def reload(self, directory: str) -> Any:
        """Rebuild a saved model with the plugin's ``load`` callback (see :class:`Component`)."""
        if self.load is None:
            raise PluginError(
                f"the {self.kind} '{self.name}' cannot reload saved models (it registered no "
                "load callback)",
                where=f"plugin '{self.origin.plugin}' ({self.origin.distribution} "
                f"{self.origin.version})",
                fix="ask the plugin's authors to register it with load=...; until then reload "
                "the model with the plugin's own code",
            )
        return self._call(self.load, "reload a saved model", directory)

    def build_trainable(self, options: Options, context: Any) -> Any:
        """The model ``kdkit teach`` fine-tunes for this teacher (see :class:`Component`)."""
        if self.trainable is None:
            raise PluginError(
                f"the {self.kind} '{self.name}' has no model to fine-tune",
                where=f"plugin '{self.origin.plugin}' ({self.origin.distribution})",
                fix="register it with trainable=...",
            )
        return self._call(self.trainable, "build its trainable model", options, context)

    def _call(self, fn: Callable[..., Any], what: str, *args: Any) -> Any:
        try:
            return fn(*args)
        except KdkitError:
            raise
        except Exception as exc:  # a plugin bug: name the plugin, keep the cause chained
            raise PluginError(
                f"{self.kind} '{self.name}' failed to {what}: {type(exc).__name__}: {exc}",
                where=f"plugin '{self.origin.plugin}' ({self.origin.distribution} "
                f"{self.origin.version})",
                fix="check the component's options; if they are right, report this to the "
                "plugin's authors (run with KDKIT_DEBUG=1 for the traceback)",
            ) from exc


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded, with what went wrong and how to fix it."""

    plugin: str
    distribution: str
    version: str
    error: str
    fix: str


@dataclass
class Registry:
    """All components of all kinds, plus the plugins that failed to load."""

    components: dict[str, dict[str, Component]] = field(
        default_factory=lambda: {kind: {} for kind in KINDS}
    )
    failures: list[PluginFailure] = field(default_factory=list)

    def add(self, component: Component) -> None:
        """Add a component; a second one with the same kind and name is an error naming both."""
        if not _NAME.match(component.name):
            raise PluginError(
                f"invalid {component.kind} name {component.name!r}",
                where=f"plugin '{component.origin.plugin}' ({component.origin.distribution})",
                fix="use lower-case letters, digits, '_', '.' or '-'",
            )
        if not (isinstance(component.config, type) and issubclass(component.config, Options)):
            raise PluginError(
                f"{component.kind} '{component.name}' registered config={component.config!r}, "
                "which is not a subclass of kdkit.api.Options",
                where=f"plugin '{component.origin.plugin}' ({component.origin.distribution})",
                fix="derive the options model from kdkit.api.Options (pydantic, extra='forbid')",
            )
        table = self.components[component.kind]
        if component.name in table:
            first = table[component.name].origin
            second = component.origin
            raise PluginError(
                f"two plugins register the {component.kind} '{component.name}': "
                f"'{first.plugin}' from {first.distribution} {first.version} and "
                f"'{second.plugin}' from {second.distribution} {second.version}",
                fix="uninstall one of the two distributions, or block one plugin with "
                f"KDKIT_DISABLE_PLUGINS={second.plugin}",
            )
        table[component.name] = component

    def names(self, kind: str) -> list[str]:
        """Sorted names of the components of ``kind``."""
        return sorted(self.components[kind])

    def __iter__(self) -> Iterator[Component]:
        for kind in KINDS:
            yield from (self.components[kind][n] for n in self.names(kind))

    def suggest(self, kind: str, name: str) -> str | None:
        """The closest registered name, if any is close enough."""
        close = difflib.get_close_matches(name, self.names(kind), n=1, cutoff=0.6)
        return close[0] if close else None

    def unknown_message(self, kind: str, name: str) -> tuple[str, str]:
        """(what, fix) for an unknown component name, with a suggestion and the failed plugins."""
        available = ", ".join(self.names(kind)) or "none installed"
        what = f"unknown {kind} '{name}'"
        guess = self.suggest(kind, name)
        if guess:
            what += f" — did you mean '{guess}'?"
        fix = f"available: {available}"
        if self.failures:
            failed = ", ".join(f"'{f.plugin}' ({f.error})" for f in self.failures)
            fix += f"; these plugins failed to load and may provide it: {failed}"
        return what, fix

    def get(self, kind: str, name: str) -> Component:
        """The component of ``kind`` called ``name``, or a :class:`PluginError` that helps."""
        if kind not in KINDS:
            raise KeyError(kind)
        try:
            return self.components[kind][name]
        except KeyError:
            what, fix = self.unknown_message(kind, name)
            raise PluginError(what, fix=fix) from None


def make_register(registry: Registry, kind: str, origin: PluginOrigin) -> Callable[..., None]:
    """The ``register`` callback handed to one plugin's registration hook for one kind."""

    def register(
        name: str,
        factory: Callable[..., Any],
        *,
        config: type[Options] | None = None,
        description: str = "",
        load: Callable[[str], Any] | None = None,
        trainable: Callable[..., Any] | None = None,
    ) -> None:
        registry.add(
            Component(
                kind=kind,
                name=name,
                factory=factory,
                config=config or NoOptions,
                description=description or (factory.__doc__ or "").strip().split("\n")[0],
                origin=origin,
                load=load,
                trainable=trainable,
            )
        )

    return register
