"""``kdkit data``: build offline datasets from real code, and inspect built ones.

* ``kdkit data build TASK --out DIR [flags]`` — TASK is any registered task that can build
  offline (``kdkit data build --help`` lists them, from the registry). Its flags are generated
  from the task's builder-options model (:attr:`kdkit.api.OfflineBuilder.builder_options`): one
  flag per field, named after it (``max_lines`` -> ``--max-lines``, or the field's
  ``json_schema_extra["flag"]``, e.g. ``--from`` for ``sources``), typed after its annotation,
  with its description and default as the help. The builder writes the task's public format plus
  ``stats.json``, and the per-split and per-label counts are printed.
* ``kdkit data info DIR`` — print the ``stats.json`` of a build.
"""

from __future__ import annotations

import argparse
import json
import types
import typing
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo

from kdkit.api import Options
from kdkit.cli.help import EXAMPLES, epilog, examples_formatter, task_examples
from kdkit.errors import KdkitError

#: Flags of ``kdkit data build`` itself; a builder-options field may not take these names.
COMMAND_FLAGS = ("--out", "--json", "--quiet")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data",
        help="build offline datasets from real code; inspect them",
        description="Offline datasets in the public formats, built from Python "
        "source on this machine (see docs/tasks.md).",
    )
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    actions = p.add_subparsers(dest="data_command", metavar="ACTION")

    # TASK's flags depend on TASK's builder, known only once the plugins are loaded: this parser
    # takes TASK and passes the rest to the parser generated for it (see `build`).
    b = actions.add_parser(
        "build",
        add_help=False,
        help="build TASK's dataset into DIR (kdkit data build TASK --help: its flags)",
        usage="kdkit data build TASK --out DIR [TASK's flags] [--json] [--quiet]",
    )
    b.add_argument("-h", "--help", action="store_true", dest="build_help")
    b.add_argument("task", nargs="?", metavar="TASK")
    b.add_argument("rest", nargs=argparse.REMAINDER)
    b.set_defaults(func=build)

    i = actions.add_parser("info", help="print the stats.json of a built dataset")
    i.add_argument("dir", help="folder written by `kdkit data build`")
    i.set_defaults(func=info)


# -- flags generated from an options model ------------------------------------------------------


def _extra(info: FieldInfo) -> dict[str, Any]:
    return info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}


def flag_of(name: str, info: FieldInfo) -> str:
    """The flag of an options field: ``json_schema_extra["flag"]`` or ``--field-name``."""
    return str(_extra(info).get("flag") or "--" + name.replace("_", "-"))


def _flag_shape(annotation: Any) -> dict[str, Any]:
    """argparse keywords for a field's type: ``X | None`` is ``X``; ``list[X]`` takes one or more
    values; ``Literal[...]`` gives the choices; int/float are converted; a bool is
    ``--x/--no-x``; anything else (e.g. ``str | list[str]``) is one string the model parses."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(options) != 1:
            return {}
        annotation = options[0]
    origin = typing.get_origin(annotation)
    if origin is list:
        return {"nargs": "+"}
    if origin is typing.Literal:
        return {"choices": list(typing.get_args(annotation))}
    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction}
    if annotation in (int, float):
        return {"type": annotation}
    return {}


def _help_of(info: FieldInfo) -> str:
    default = info.get_default(call_default_factory=True)
    text = info.description or ""
    if default is None or isinstance(default, bool):
        return text
    shown = " ".join(map(str, default)) if isinstance(default, list | tuple) else default
    return f"{text} (default: {shown})"


def add_option_flags(parser: argparse.ArgumentParser, model: type[Options]) -> None:
    """One flag per field of ``model``; a flag left out keeps the model's default."""
    for name, info in model.model_fields.items():
        kwargs: dict[str, Any] = {
            "dest": name,
            "default": argparse.SUPPRESS,
            "help": _help_of(info),
            **_flag_shape(info.annotation),
        }
        if "action" not in kwargs:
            metavars: dict[Any, str] = {int: "N", float: "X"}
            kind = metavars.get(kwargs.get("type"), name.upper())
            kwargs["metavar"] = _extra(info).get("metavar") or kind
            if "choices" in kwargs:
                kwargs["metavar"] = "|".join(map(str, kwargs["choices"]))
        parser.add_argument(flag_of(name, info), **kwargs)


# -- kdkit data build ---------------------------------------------------------------------------


def _builder(component: Any) -> tuple[type[Options], Any] | None:
    """``(builder_options, build_offline)`` of a registered task, or ``None``."""
    from kdkit.data.build import offline_builder

    return offline_builder(component.factory)


def _task_list(registry: Any) -> str:
    rows = []
    for name in registry.names("task"):
        component = registry.get("task", name)
        can = "" if _builder(component) else "  (no offline builder)"
        rows.append(f"  {name:<14} {component.description}{can}")
    return "\n".join(rows)


def task_parser(name: str, component: Any, model: type[Options]) -> argparse.ArgumentParser:
    """The parser of ``kdkit data build NAME``: the command's flags plus the builder's."""
    parser = argparse.ArgumentParser(
        prog=f"kdkit data build {name}",
        description=f"Build the {name} task's dataset ({component.description}) in its public "
        "format, plus stats.json, from the given sources. Flags are the fields of "
        f"{model.__module__}.{model.__name__}.",
        epilog=epilog(task_examples(name)),
        formatter_class=examples_formatter(argparse.HelpFormatter),
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--json", action="store_true", help="print stats.json instead of a table")
    parser.add_argument("--quiet", action="store_true", help="no progress messages")
    try:
        add_option_flags(parser, model)
    except argparse.ArgumentError as exc:  # a field named like --out: the plugin's mistake
        raise KdkitError(
            f"the {name} task's builder options cannot become flags: {exc}",
            where=f"{model.__module__}.{model.__name__} (plugin '{component.origin.plugin}')",
            fix=f"rename the field; {', '.join(COMMAND_FLAGS)} belong to kdkit data build",
        ) from exc
    return parser


def _unknown_flags(registry: Any, task: str, unknown: list[str]) -> KdkitError:
    """A helpful error for flags TASK's builder does not take (naming the tasks that do)."""
    flag = next((u.split("=", 1)[0] for u in unknown if u.startswith("--")), unknown[0])
    takers = []
    for name in registry.names("task"):
        found = _builder(registry.get("task", name))
        if found and flag in {flag_of(n, i) for n, i in found[0].model_fields.items()}:
            takers.append(name)
    if takers:
        return KdkitError(
            f"{flag} does not apply to the {task} builder",
            where=f"kdkit data build {task}",
            fix=f"{flag} is for: {', '.join(takers)}",
        )
    return KdkitError(
        f"unknown argument(s) {' '.join(unknown)}",
        where=f"kdkit data build {task}",
        fix=f"see `kdkit data build {task} --help`",
    )


def build(args: argparse.Namespace) -> int:
    """``kdkit data build``: find TASK's builder in the registry, parse its flags, build."""
    from kdkit.data.build import build_atomically, validate_options
    from kdkit.discovery import load_plugins

    registry = load_plugins().registry
    if args.task is None or args.task.startswith("-"):
        print(
            "usage: kdkit data build TASK --out DIR [TASK's flags] [--json] [--quiet]\n\n"
            "Build TASK's dataset in its public format from real code.\n"
            "`kdkit data build TASK --help` shows TASK's flags. Registered tasks:\n"
            f"{_task_list(registry)}\n\n{epilog(EXAMPLES['data build'])}"
        )
        return 0 if args.build_help else 2
    component = registry.get("task", args.task)  # unknown: "did you mean", exit 2
    found = _builder(component)
    if found is None:
        able = [n for n in registry.names("task") if _builder(registry.get("task", n))]
        raise KdkitError(
            f"the {args.task} task has no offline builder",
            where=f"kdkit data build {args.task}",
            fix=f"give its data in its public format (task.data_dir); tasks that build offline: "
            f"{', '.join(able) or 'none'}",
        )
    model, build_offline = found
    rest = ["--help"] if args.build_help else list(args.rest)
    ns, unknown = task_parser(args.task, component, model).parse_known_args(rest)
    if unknown:
        raise _unknown_flags(registry, args.task, unknown)
    values = {k: getattr(ns, k) for k in model.model_fields if hasattr(ns, k)}
    options = validate_options(model, values, where=f"kdkit data build {args.task}")
    # built beside --out and swapped in whole: a kill never leaves a mix of old and new splits
    report = build_atomically(
        Path(ns.out), lambda work: build_offline(work, options, quiet=ns.quiet)
    )
    if ns.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(report.render())
        print(f"wrote {ns.out} (counts in {Path(ns.out) / 'stats.json'})")
    return 0


def info(args: argparse.Namespace) -> int:
    """``kdkit data info``."""
    path = Path(args.dir) / "stats.json"
    if not path.is_file():
        raise KdkitError(
            f"no stats.json in {args.dir}",
            where=str(args.dir),
            fix="point at a folder written by `kdkit data build`",
        )
    print(path.read_text(encoding="utf-8"), end="")
    return 0
