"""``kdkit plugins``: what is installed, where each component comes from, what failed."""

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
        "description) and every plugin that failed to load, with its error and a fix.",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--kind", choices=list(KINDS), help="only components of this kind")
    p.set_defaults(func=run)


def plugins_report(plugins: Plugins, kind: str | None = None) -> dict[str, Any]:
    """The data ``kdkit plugins --json`` prints."""
    components = [
        {
            "name": c.name,
            "kind": c.kind,
            "plugin": c.origin.plugin,
            "distribution": c.origin.distribution,
            "version": c.origin.version,
            "description": c.description,
            "options": sorted(c.config.model_fields),
        }
        for c in plugins.registry
        if kind is None or c.kind == kind
    ]
    failed = [
        {"plugin": f.plugin, "distribution": f.distribution, "version": f.version,
         "error": f.error, "fix": f.fix}
        for f in plugins.failures
    ]  # fmt: skip
    return {"components": components, "failed": failed}


def run(args: argparse.Namespace) -> int:
    report = plugins_report(load_plugins(), args.kind)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
        return 0
    rows = [("KIND", "NAME", "PLUGIN", "DISTRIBUTION", "DESCRIPTION")]
    rows += [
        (c["kind"], c["name"], c["plugin"], f"{c['distribution']} {c['version']}", c["description"])
        for c in report["components"]
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4][:70])
    if report["failed"]:
        print("\nPlugins that failed to load (other commands still work):")
        for f in report["failed"]:
            print(f"  {f['plugin']} ({f['distribution']} {f['version']}): {f['error']}")
            print(f"    fix: {f['fix']}")
    return 0
