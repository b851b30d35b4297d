"""``kdkit config validate|show|schema``."""

from __future__ import annotations

import argparse
import json

from kdkit.config import json_schema, load_config
from kdkit.discovery import load_plugins


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "config",
        help="validate, show or describe run files",
        description="Validate a run file, print it fully resolved, or print the "
        "JSON Schema of run files for the plugins installed now.",
    )
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    for name, text in [
        ("validate", "check a run file; print every problem with file:line and a fix (exit 2)"),
        ("show", "print a run file fully resolved, with every default (no FILE: the default run)"),
    ]:
        q = csub.add_parser(name, help=text, description=text)
        q.add_argument("file", nargs="?" if name == "show" else None, help="run file (YAML)")
        q.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a setting, e.g. --set method.temperature=4 (repeatable)",
        )
        q.set_defaults(func=_validate if name == "validate" else _show)
    q = csub.add_parser(
        "schema",
        help="print the JSON Schema of run files",
        description="JSON Schema of run files for the components installed now.",
    )
    q.set_defaults(func=_schema)


def _validate(args: argparse.Namespace) -> int:
    resolved = load_config(args.file, load_plugins().registry, args.overrides)
    names = ", ".join(f"{s}={r.component.name}" for s, r in resolved.components.items())
    print(f"{args.file}: valid ({names})")
    return 0


def _show(args: argparse.Namespace) -> int:
    print(load_config(args.file, load_plugins().registry, args.overrides).to_yaml(), end="")
    return 0


def _schema(args: argparse.Namespace) -> int:
    print(json.dumps(json_schema(load_plugins().registry), indent=2))
    return 0
