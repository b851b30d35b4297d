"""Named components collected from the registration hooks, with "did you mean" lookup."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from kdkit.api import BuildContext, NoOptions, Options, Student
from kdkit.errors import KdkitError, PluginError
from kdkit.shared_work import SharedWorkBusy

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
    load: Callable[[str], Student] | None = None
    trainable: Callable[..., Any] | None = None

    def options(self, values: dict[str, Any] | None = None) -> Options:
        """Validate ``values`` against the component's options model."""
        return self.config(**(values or {}))

    def build(self, options: Options, context: BuildContext | None) -> Any:
        """Call the factory; failures inside a plugin are reported with the plugin named.
        ``context`` is ``None`` for bench ops (built outside a run)."""
        return self._call(self.factory, "build", options, context)

    def reload(self, directory: str) -> Student:
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

    def build_trainable(self, options: Options, context: BuildContext) -> Student:
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
        except (KdkitError, SharedWorkBusy):  # a user error, or "shared work busy" for the study
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


@dataclass(frozen=True)
class PluginCommand:
    """A ``kdkit`` sub-command added by a plugin through the ``register_commands`` hook.

    Attributes:
        name: the sub-command (``kdkit NAME ...``).
        run: ``run(args: argparse.Namespace) -> int | None``; the exit status (``None`` is 0).
        configure: ``configure(parser: argparse.ArgumentParser) -> None`` adds the command's
            arguments, or ``None`` for a command without arguments.
        help: one line shown by ``kdkit --help`` and ``kdkit plugins``.
        description: the longer text of ``kdkit NAME --help`` (default: ``help``).
        origin: the plugin and distribution that added it.
    """

    name: str
    run: Callable[..., Any]
    configure: Callable[..., Any] | None
    help: str
    description: str
    origin: PluginOrigin
    kind: str = "command"


@dataclass
class Collision:
    """One name of one kind registered by several plugins: unusable until all but one go.

    ``registrants`` are in load order: kdkit's own plugins load first, third-party plugins then
    in entry-point name order, so the first registrant is the incumbent and the others are the
    newcomers.
    """

    kind: str
    name: str
    registrants: list[Any]  # Component or PluginCommand, each with an ``origin``

    @property
    def origins(self) -> list[PluginOrigin]:
        """Where each registration came from, incumbent first."""
        return [r.origin for r in self.registrants]

    @property
    def newcomers(self) -> list[PluginOrigin]:
        """The plugins to disable: all but the first registrant."""
        return self.origins[1:]

    def what(self) -> str:
        """One sentence naming every plugin and distribution that registered the name."""
        who = " and ".join(
            f"'{o.plugin}' from {o.distribution} {o.version}".rstrip() for o in self.origins
        )
        return f"{len(self.origins)} plugins register the {self.kind} '{self.name}': {who}"

    def fix(self) -> str:
        """How to make the name usable again: disable (or uninstall) the newcomers."""
        plugins = ",".join(o.plugin for o in self.newcomers)
        dists = " ".join(sorted({o.distribution for o in self.newcomers}))
        first = self.origins[0]
        return (
            f"disable the newcomer with KDKIT_DISABLE_PLUGINS={plugins} (or pip uninstall "
            f"{dists}) to use {first.distribution}'s {self.kind} '{self.name}'; runs that do "
            "not use this name are not affected"
        )

    def error(self) -> PluginError:
        """The error raised when a run (or a lookup) uses the contested name."""
        return PluginError(self.what(), fix=self.fix())


@dataclass
class Registry:
    """All components of all kinds, plugin commands, name collisions and failed plugins.

    A name registered twice for one kind is a :class:`Collision`: it is removed from
    :attr:`components` (so :meth:`names` and iteration leave it out), :meth:`get` and
    :meth:`unknown_message` report it with every distribution named, and every other name keeps
    working. Only a run that uses the contested name fails.
    """

    components: dict[str, dict[str, Component]] = field(
        default_factory=lambda: {kind: {} for kind in KINDS}
    )
    failures: list[PluginFailure] = field(default_factory=list)
    commands: dict[str, PluginCommand] = field(default_factory=dict)
    collisions: list[Collision] = field(default_factory=list)

    def _check_name(self, kind: str, name: str, origin: PluginOrigin) -> None:
        where = f"plugin '{origin.plugin}' ({origin.distribution})"
        if not isinstance(name, str) or not _NAME.match(name):
            raise PluginError(
                f"invalid {kind} name {name!r}",
                where=where,
                fix="use lower-case letters, digits, '_', '.' or '-'",
            )

    def _insert(self, table: dict[str, Any], entry: Any) -> None:
        """Put ``entry`` in ``table``, turning a second registration of its name into a collision."""
        collision = self.collision(entry.kind, entry.name)
        if collision is not None:
            collision.registrants.append(entry)
            return
        first = table.get(entry.name)
        if first is None:
            table[entry.name] = entry
            return
        if first.origin.plugin == entry.origin.plugin:
            raise PluginError(
                f"the {entry.kind} '{entry.name}' is registered twice by one plugin",
                where=f"plugin '{entry.origin.plugin}' ({entry.origin.distribution})",
                fix="register each name once",
            )
        del table[entry.name]
        self.collisions.append(Collision(entry.kind, entry.name, [first, entry]))

    def add(self, component: Component) -> None:
        """Add a component (the ``register`` callback calls this).

        Raises:
            PluginError: for an invalid name or options model, or a name the same plugin already
                registered. A name another plugin registered becomes a :class:`Collision`.
        """
        self._check_name(component.kind, component.name, component.origin)
        if not (isinstance(component.config, type) and issubclass(component.config, Options)):
            raise PluginError(
                f"{component.kind} '{component.name}' registered config={component.config!r}, "
                "which is not a subclass of kdkit.api.Options",
                where=f"plugin '{component.origin.plugin}' ({component.origin.distribution})",
                fix="derive the options model from kdkit.api.Options (pydantic, extra='forbid')",
            )
        self._insert(self.components[component.kind], component)

    def add_command(self, command: PluginCommand) -> None:
        """Add a plugin sub-command (the ``add_command`` callback calls this); same rules as :meth:`add`."""
        self._check_name("command", command.name, command.origin)
        bad = "run" if not callable(command.run) else None
        if command.configure is not None and not callable(command.configure):
            bad = "configure"
        if bad is not None:
            raise PluginError(
                f"command '{command.name}': {bad}={getattr(command, bad)!r} is not callable",
                where=f"plugin '{command.origin.plugin}' ({command.origin.distribution})",
                fix="pass run(args) -> int | None and, optionally, configure(parser) -> None",
            )
        self._insert(self.commands, command)

    def merge(self, other: Registry) -> None:
        """Add everything ``other`` holds (one plugin's registrations, committed at once)."""
        for kind in KINDS:
            for component in other.components[kind].values():
                self.add(component)
        for command in other.commands.values():
            self.add_command(command)

    def collision(self, kind: str, name: str) -> Collision | None:
        """The collision on ``name`` of ``kind``, if several plugins registered it."""
        return next((c for c in self.collisions if (c.kind, c.name) == (kind, name)), None)

    def names(self, kind: str) -> list[str]:
        """Sorted names of the usable components of ``kind`` (contested names left out)."""
        return sorted(self.components[kind])

    def __iter__(self) -> Iterator[Component]:
        for kind in KINDS:
            yield from (self.components[kind][n] for n in self.names(kind))

    def suggest(self, kind: str, name: str) -> str | None:
        """The closest registered name, if any is close enough."""
        close = difflib.get_close_matches(name, self.names(kind), n=1, cutoff=0.6)
        return close[0] if close else None

    def unknown_message(self, kind: str, name: str) -> tuple[str, str]:
        """(what, fix) for a name that is not usable: contested, or unknown with a suggestion
        and the plugins that failed to load."""
        collision = self.collision(kind, name)
        if collision is not None:
            return collision.what(), collision.fix()
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
        load: Callable[[str], Student] | None = None,
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


def make_add_command(registry: Registry, origin: PluginOrigin) -> Callable[..., None]:
    """The ``add_command`` callback handed to one plugin's ``register_commands`` hook."""

    def add_command(
        name: str,
        run: Callable[..., Any],
        *,
        configure: Callable[..., Any] | None = None,
        help: str = "",
        description: str = "",
    ) -> None:
        summary = help or (getattr(run, "__doc__", None) or "").strip().split("\n")[0]
        registry.add_command(
            PluginCommand(name, run, configure, summary, description or summary, origin)
        )

    return add_command
