"""``kdkit report STUDY_DIR [MORE ...]``: tables, figures and an HTML page of a study.

Reads every run directory that exists under the given study directories (or run folders copied
from other machines), aggregates seeds, and writes Markdown, HTML, CSV and JSON plus figures.
Given a report's ``results.json`` instead, it writes the report again from it. ``--grid`` first
computes the baselines of the grid's tasks (for runs whose summaries predate them).
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
    p.add_argument(
        "study_dir",
        nargs="+",
        help="study directory (or runs/ folders to merge), or a report's results.json "
        "(write the report again from it)",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help="where to write (default: STUDY_DIR/report; for a results.json: its folder)",
    )
    p.add_argument(
        "--grid",
        metavar="GRID.yaml",
        help="compute the baselines of the grid's tasks on the runs' splits (cached "
        "with the data) into STUDY_DIR/baselines.json first: for runs made before "
        "summaries stored them",
    )
    p.add_argument("--quiet", action="store_true", help="do not list skipped run directories")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kdkit.study.report import write_report
    from kdkit.study.results import collect

    dirs = [Path(d) for d in args.study_dir]
    for d in dirs:
        if not d.is_dir() and not (d.is_file() and d.name.endswith(".json")):
            raise KdkitError(
                f"not a directory: {d}",
                where="kdkit report",
                fix="pass the study's output_dir (it holds runs/), or a report's results.json",
            )
    log = (lambda _m: None) if args.quiet else (lambda m: print(m, file=sys.stderr))
    if args.grid:
        from kdkit.study.baselines import grid_baselines, write_baselines_file

        target = dirs[0].parent if dirs[0].is_file() else dirs[0]
        found = grid_baselines(args.grid, log=log)
        log(f"kdkit: wrote {write_baselines_file(target, found, source=str(args.grid))}")
    if dirs[0].is_dir() and not collect(dirs):
        raise KdkitError(
            "no finished run found",
            where=", ".join(map(str, dirs)),
            fix="run the study first (`kdkit study GRID.yaml`), or pass the directory that holds "
            "runs/ (each run with a summary.json)",
        )
    out = write_report(*dirs, out_dir=args.out, log=log)
    for name in (
        "report.md",
        "report.html",
        "results.csv",
        "runs.csv",
        "baselines.csv",
        "results.json",
    ):
        print(out / name)
    for fig in sorted((out / "figures").glob("*.png")):
        print(fig)
    return 0
