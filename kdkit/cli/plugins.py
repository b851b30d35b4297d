"""``kdkit plugins``: what is installed, where each component comes from, what failed.

It always exits 0 when it could list the plugins: failed plugins and name collisions are
reported, not fatal (only a run that needs a failed plugin or a contested name stops).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from kdkit.discovery import Plugins, load_plugins
from kdkit.registry import KINDS


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plugins",
        help="list installed components and plugins that failed to load",
        description="List every registered component (name, kind, plugin, distribution, version, "
        "description), the sub-commands plugins add, names several plugins register "
        "(collisions), and every plugin that failed to load, with its error and a fix.",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--kind",
        choices=[*KINDS, "command"],
        help="only components (or plugin commands) of this kind",
    )
    p.set_defaults(func=run)


def _origin(o: Any) -> dict[str, str]:
    return {"plugin": o.plugin, "distribution": o.distribution, "version": o.version}


def plugins_report(plugins: Plugins, kind: str | None = None) -> dict[str, Any]:
    """The data ``kdkit plugins --json`` prints.

    Keys: ``components`` (usable components), ``commands`` (sub-commands added by plugins),
    ``collisions`` (names several plugins register, each with every registrant and the fix) and
    ``failed`` (plugins, or plugin commands, that could not be loaded).
    """
    from kdkit.cli import COMMANDS, add_plugin_commands

    # try every plugin command on a scratch parser, so a broken one is listed under "failed"
    scratch = argparse.ArgumentParser().add_subparsers()
    for name in COMMANDS:
        scratch.add_parser(name)
    added = set(add_plugin_commands(scratch, plugins))
    components = [
        {
            "name": c.name,
            "kind": c.kind,
            **_origin(c.origin),
            "description": c.description,
            "options": sorted(c.config.model_fields),
        }
        for c in plugins.registry
        if kind is None or c.kind == kind
    ]
    commands = [
        {"name": c.name, "kind": "command", **_origin(c.origin), "description": c.help}
        for name, c in sorted(plugins.commands.items())
        if name in added and kind in (None, "command")
    ]
    collisions = [
        {
            "kind": c.kind,
            "name": c.name,
            "registrants": [_origin(o) for o in c.origins],
            "error": c.what(),
            "fix": c.fix(),
        }
        for c in plugins.registry.collisions
        if kind is None or c.kind == kind
    ]
    failed = [
        {
            "plugin": f.plugin,
            "distribution": f.distribution,
            "version": f.version,
            "error": f.error,
            "fix": f.fix,
        }
        for f in plugins.failures
    ]
    return {
        "components": components,
        "commands": commands,
        "collisions": collisions,
        "failed": failed,
    }


def run(args: argparse.Namespace) -> int:
    report = plugins_report(load_plugins(), args.kind)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
        return 0
    rows = [("KIND", "NAME", "PLUGIN", "DISTRIBUTION", "DESCRIPTION")]
    rows += [
        (c["kind"], c["name"], c["plugin"], f"{c['distribution']} {c['version']}", c["description"])
        for c in report["components"] + report["commands"]
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4][:70])
    if report["collisions"]:
        print("\nName collisions (only runs that use these names stop):")
        for c in report["collisions"]:
            print(f"  {c['error']}")
            print(f"    fix: {c['fix']}")
    if report["failed"]:
        print("\nPlugins that failed to load (other commands still work):")
        for f in report["failed"]:
            print(f"  {f['plugin']} ({f['distribution']} {f['version']}): {f['error']}")
            print(f"    fix: {f['fix']}")
    return 0
