"""``kdkit data``: build offline datasets from real code, and inspect built ones.

* ``kdkit data build TASK --from SOURCES --out DIR`` — TASK is ``exception``, ``defect`` or
  ``clone``; SOURCES any mix of ``stdlib``, ``site-packages`` and directories. Writes the task's
  public format (CuBERT JSONL, Devign JSONL, BigCloneBench) plus ``stats.json``, and prints the
  per-split and per-label counts.
* ``kdkit data info DIR`` — print the ``stats.json`` of a build.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from kdkit.errors import KdkitError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="build offline datasets from real code; inspect them",
                       description="Offline datasets in the public formats, built from Python "
                       "source on this machine (see docs/tasks.md).")  # fmt: skip
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    actions = p.add_subparsers(dest="data_command", metavar="ACTION")

    b = actions.add_parser(
        "build",
        help="build TASK's dataset from SOURCES into DIR",
        description="Build a dataset in TASK's public format from real Python code. SOURCES: "
        "'stdlib' (this interpreter's standard library), 'site-packages', or directories.",
    )
    b.add_argument("task", choices=["exception", "defect", "clone"])
    b.add_argument(
        "--from",
        dest="sources",
        nargs="+",
        default=["stdlib"],
        metavar="SOURCE",
        help="stdlib, site-packages and/or directories (default: stdlib)",
    )
    b.add_argument("--out", required=True, metavar="DIR", help="output folder")
    b.add_argument("--seed", type=int, default=0, help="seed of the split and of random edits")
    b.add_argument(
        "--split-by",
        choices=["file", "package"],
        default="file",
        help="the unit kept within one split (default: file)",
    )
    b.add_argument(
        "--min-examples", type=int, default=None, help="fewer examples is an error (default: 100)"
    )
    b.add_argument(
        "--max-functions",
        type=int,
        default=None,
        help="defect/clone: seeded cap on the functions used",
    )
    b.add_argument("--max-lines", type=int, default=None, help="skip longer functions")
    b.add_argument("--max-chars", type=int, default=None, help="skip longer functions")
    b.add_argument(
        "--labels",
        default=None,
        help="exception: 'cubert' (default), 'top-K', or comma-separated names",
    )
    b.add_argument(
        "--window", type=int, default=None, help="exception: keep N lines before and after the hole"
    )
    b.add_argument(
        "--kinds",
        default=None,
        help="defect: comma-separated bug kinds (variable_misuse,swapped_operands,wrong_operator)",
    )
    b.add_argument(
        "--near-miss-share",
        type=float,
        default=None,
        help="clone: share of negatives that are near-miss mutants (default 0.7)",
    )
    b.add_argument("--json", action="store_true", help="print stats.json instead of a table")
    b.add_argument("--quiet", action="store_true", help="no progress messages")
    b.set_defaults(func=build)  # fmt: skip

    i = actions.add_parser("info", help="print the stats.json of a built dataset")
    i.add_argument("dir", help="folder written by `kdkit data build`")
    i.set_defaults(func=info)


#: Options that only some builders take: option -> tasks accepting it.
TASK_ONLY = {
    "labels": ("exception",),
    "window": ("exception",),
    "kinds": ("defect",),
    "near_miss_share": ("clone",),
    "max_functions": ("defect", "clone"),
}


def builder_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of the builder from the parsed command line (only those given)."""
    kwargs: dict[str, Any] = {"seed": args.seed, "split_by": args.split_by, "quiet": args.quiet}
    given = {
        "min_examples": args.min_examples,
        "max_functions": args.max_functions,
        "max_lines": args.max_lines,
        "max_chars": args.max_chars,
        "labels": args.labels,
        "window": args.window,
        "kinds": args.kinds,
        "near_miss_share": args.near_miss_share,
    }
    for key, value in given.items():
        if value is None:
            continue
        if key in TASK_ONLY and args.task not in TASK_ONLY[key]:
            flag = "--" + key.replace("_", "-")
            raise KdkitError(f"{flag} does not apply to the {args.task} builder",
                             where=f"kdkit data build {args.task}",
                             fix=f"{flag} is for: {', '.join(TASK_ONLY[key])}")  # fmt: skip
        if key == "labels" and value != "cubert" and not value.startswith("top-"):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if key == "kinds":
            value = [v.strip() for v in value.split(",") if v.strip()]
        kwargs[key] = value
    return kwargs


def build(args: argparse.Namespace) -> int:
    """``kdkit data build``."""
    from kdkit.data.builders import get_builder

    report = get_builder(args.task)(Path(args.out), args.sources, **builder_kwargs(args))
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(report.render())
        print(f"wrote {args.out} (counts in {Path(args.out) / 'stats.json'})")
    return 0


def info(args: argparse.Namespace) -> int:
    """``kdkit data info``."""
    path = Path(args.dir) / "stats.json"
    if not path.is_file():
        raise KdkitError(f"no stats.json in {args.dir}", where=str(args.dir),
                         fix="point at a folder written by `kdkit data build`")  # fmt: skip
    print(path.read_text(encoding="utf-8"), end="")
    return 0
