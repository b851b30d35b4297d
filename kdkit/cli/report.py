"""``kdkit report STUDY_DIR [MORE ...]``: tables, figures and an HTML page of a study.

Reads every run directory that exists under the given study directories (or run folders copied
from other machines), aggregates seeds, and writes Markdown, HTML, CSV and JSON plus figures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kdkit.errors import KdkitError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="tables, figures and an HTML page of a study's runs",
        description="Merge the run directories under STUDY_DIR (and any more directories given: "
        "other shards' or machines' copies) into the study's tables (Markdown, HTML, CSV, JSON) "
        "and figures.",
    )
    p.add_argument("study_dir", nargs="+", help="study directory (or runs/ folders to merge)")
    p.add_argument("--out", metavar="DIR", help="where to write (default: STUDY_DIR/report)")
    p.add_argument("--quiet", action="store_true", help="do not list skipped run directories")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kdkit.study.report import write_report
    from kdkit.study.results import collect

    dirs = [Path(d) for d in args.study_dir]
    for d in dirs:
        if not d.is_dir():
            raise KdkitError(f"not a directory: {d}", where="kdkit report",
                             fix="pass the study's output_dir (it holds runs/)")  # fmt: skip
    if not collect(dirs):
        raise KdkitError(
            "no finished run found",
            where=", ".join(map(str, dirs)),
            fix="run the study first (`kdkit study GRID.yaml`), or pass the directory that holds "
            "runs/ (each run with a summary.json)",
        )
    log = (lambda _m: None) if args.quiet else (lambda m: print(m, file=sys.stderr))
    out = write_report(*dirs, out_dir=args.out, log=log)
    for name in ("report.md", "report.html", "results.csv", "runs.csv", "results.json"):
        print(out / name)
    for fig in sorted((out / "figures").glob("*.png")):
        print(fig)
    return 0
