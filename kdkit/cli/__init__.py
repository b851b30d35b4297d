"""The ``kdkit`` command line.

Each built-in sub-command lives in its own module of this package and exposes
``add_parser(subparsers)``, which adds its parser and sets ``func`` (``Namespace -> int``); a
module listed in :data:`COMMANDS` that is missing is a broken installation, reported as an error.
Plugins add sub-commands through the ``register_commands`` hook (:func:`add_plugin_commands`);
they are loaded only when the command line does not start with a built-in command, so a
built-in command never pays for (or is disturbed by) a plugin's command.
User errors (:class:`kdkit.errors.KdkitError`) are printed without a traceback and exit with
status 2; ``KDKIT_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kdkit import host_allocator
from kdkit.errors import KdkitError, PluginError

if TYPE_CHECKING:
    from kdkit.discovery import Plugins
    from kdkit.registry import PluginCommand

#: Sub-command modules, in the order ``kdkit --help`` lists them.
COMMANDS = [
    "run",
    "teach",
    "pretrain",
    "predict",
    "export",
    "data",
    "plugins",
    "config",
    "cache",
    "bench",
    "profile",
    "study",
    "report",
]


def build_parser(plugins: Plugins | None = None) -> argparse.ArgumentParser:
    """The argument parser with every built-in sub-command, and ``plugins``' commands if given.

    Raises:
        KdkitError: a built-in command's module is missing (a broken installation).
    """
    parser = argparse.ArgumentParser(
        prog="kdkit",
        description="Knowledge distillation of code-understanding models. "
        "`kdkit run` with no arguments runs the offline default job.",
    )
    from kdkit import __version__

    parser.add_argument("--version", action="version", version=f"kdkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"kdkit.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"kdkit.cli.{name}":
                raise  # a dependency of the command is missing: its own error says which
            raise KdkitError(
                f"the built-in command module kdkit.cli.{name} is missing",
                where="the kdkit installation",
                fix="re-install kdkit (pip install -e . in a checkout, or pip install "
                "--force-reinstall kdkit)",
            ) from exc
        module.add_parser(sub)
    from kdkit.cli.help import add_examples

    add_examples(parser)  # every built-in command's --help ends with examples
    if plugins is not None:
        add_plugin_commands(sub, plugins)
    return parser


def _command_failure(command: PluginCommand, error: str, plugins: Plugins) -> None:
    from kdkit.registry import PluginFailure

    o = command.origin
    failure = PluginFailure(
        o.plugin,
        o.distribution,
        o.version,
        f"command '{command.name}': {error}",
        f"fix or upgrade {o.distribution}, or skip it with KDKIT_DISABLE_PLUGINS={o.plugin}",
    )
    if failure not in plugins.registry.failures:  # the commands may be attached more than once
        plugins.registry.failures.append(failure)


def add_plugin_commands(sub: argparse._SubParsersAction, plugins: Plugins) -> list[str]:
    """Add the commands plugins registered to ``sub``; returns the names added.

    A command named like a built-in, or whose ``configure(parser)`` raises, is not added and is
    recorded in ``plugins.failures`` (``kdkit plugins`` shows it). ``configure`` is tried on a
    scratch parser first, so a failure leaves no half-built command behind.
    """
    added = []
    for name, command in sorted(plugins.commands.items()):
        if name in COMMANDS or name in sub.choices:
            _command_failure(command, f"'{name}' is a built-in kdkit command", plugins)
            continue
        if command.configure is not None:
            try:
                command.configure(argparse.ArgumentParser(prog=f"kdkit {name}"))
            except Exception as exc:  # a plugin bug: isolate it like a failed import
                _command_failure(command, f"configure failed: {type(exc).__name__}: {exc}", plugins)
                continue
        parser = sub.add_parser(
            name,
            help=f"{command.help} [plugin {command.origin.plugin}]",
            description=command.description,
        )
        if command.configure is not None:
            command.configure(parser)
        parser.set_defaults(func=_plugin_runner(command))
        added.append(name)
    return added


def _plugin_runner(command: PluginCommand) -> Any:
    """``command.run`` with a plugin's unexpected exception turned into an error naming it."""

    def run(args: argparse.Namespace) -> int | None:
        try:
            return command.run(args)
        except (KdkitError, KeyboardInterrupt, BrokenPipeError):
            raise
        except Exception as exc:
            o = command.origin
            raise PluginError(
                f"command '{command.name}' failed: {type(exc).__name__}: {exc}",
                where=f"plugin '{o.plugin}' ({o.distribution} {o.version})",
                fix="check the command's arguments; if they are right, report this to the "
                "plugin's authors (run with KDKIT_DEBUG=1 for the traceback)",
            ) from exc

    return run


def _unknown_command(name: str, plugins: Plugins, choices: list[str]) -> KdkitError:
    import difflib

    collision = plugins.registry.collision("command", name)
    if collision is not None:
        return collision.error()
    what = f"unknown command '{name}'"
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    if close:
        what += f" — did you mean '{close[0]}'?"
    fix = "`kdkit --help` lists the commands"
    if plugins.failures:
        failed = ", ".join(f"'{f.plugin}' ({f.error})" for f in plugins.failures)
        fix += f"; these plugins failed to load and may provide it: {failed}"
    return KdkitError(what, fix=fix)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kdkit`` console script."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if host_allocator.requested():  # unless KDKIT_MALLOC_TUNING=0: freed temporaries stay mapped
        host_allocator.keep_freed_memory()
    if not args_list:
        args_list = ["run"]  # `kdkit` alone runs the default job, like `kdkit run`
    try:
        plugins = None
        if args_list[0] not in COMMANDS:  # --help, --version or a plugin's command
            from kdkit.discovery import load_plugins

            plugins = load_plugins()
        parser = build_parser(plugins)
        first = args_list[0]
        choices = parser_choices(parser)
        if plugins is not None and not first.startswith("-") and first not in choices:
            raise _unknown_command(first, plugins, choices)
        args = parser.parse_args(args_list)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except KdkitError as exc:
        if os.environ.get("KDKIT_DEBUG"):
            raise
        print(f"kdkit: error: {exc.render()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("kdkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `kdkit plugins --json | head`: the reader left; not an error
        sys.stderr.close()
        return 0


def parser_choices(parser: argparse.ArgumentParser) -> list[str]:
    """The sub-command names ``parser`` accepts."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    return []


def run_main() -> None:  # pragma: no cover - console script shim
    sys.exit(main())
