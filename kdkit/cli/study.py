"""``kdkit study GRID.yaml``: run a grid of distillation runs (resumable, shardable).

Every run of the grid is validated first (all problems at once, exit 2). Then the runs of this
shard that are not complete are run in seed-major order (complete ones are skipped, interrupted
ones resume). When the whole study is complete, the efficiency measurements and the report are
made too (``--no-measure``, ``--no-report`` skip them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kdkit.discovery import load_plugins
from kdkit.errors import KdkitError


def run_workers(args: argparse.Namespace, output_dir: Path) -> int:
    """Run the study with N worker subprocesses sharing one queue of runs; wait for all.

    Each worker walks every run and claims the next unclaimed one (``--queue DIR``:
    :class:`kdkit.study.runner.RunQueue`), so no worker idles while another still has a backlog.
    """
    import os
    import shutil
    import subprocess
    import time

    output_dir.mkdir(parents=True, exist_ok=True)
    queue = output_dir / f".queue-{os.getpid()}-{time.time_ns()}"  # private to this call
    procs = []
    for i in range(1, args.workers + 1):
        cmd = [
            sys.executable,
            "-m",
            "kdkit",
            "study",
            args.grid,
            "--queue",
            str(queue),
            "--output-dir",
            str(output_dir),
            "--no-measure",
            "--no-report",
        ]
        for item in args.overrides:
            cmd += ["--set", item]
        for flag in ("fail_fast", "isolate"):
            if getattr(args, flag):
                cmd.append("--" + flag.replace("_", "-"))
        if args.max_runs is not None:
            cmd += ["--max-runs", str(args.max_runs)]
        log = open(output_dir / f"worker-{i}-of-{args.workers}.log", "a", encoding="utf-8")
        print(f"worker {i}/{args.workers}: {' '.join(cmd[2:])} (log: {log.name})")
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log))
    codes = []
    try:
        for proc, log in procs:
            codes.append(proc.wait())
            log.close()
    except KeyboardInterrupt:
        for proc, _log in procs:
            proc.terminate()
        raise
    finally:
        if all(proc.poll() is not None for proc, _log in procs):
            shutil.rmtree(queue, ignore_errors=True)
    bad = [i + 1 for i, c in enumerate(codes) if c != 0]
    if bad:
        print(
            f"workers {bad} reported failed runs (see their logs); re-run to retry them",
            file=sys.stderr,
        )
        return 1
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study",
        help="run a grid of runs (tasks x teachers x students x methods x seeds) and report it",
        description="Expand GRID.yaml into ordinary runs (one directory each), validate them all, "
        "and run those not complete: completed runs are skipped, interrupted ones resume. See "
        "docs/reproduction.md.",
    )
    p.add_argument("grid", help="grid file (YAML), e.g. configs/study/offline.yaml")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="validate, list the runs with their status and estimated cost; run nothing",
    )
    p.add_argument(
        "--shard",
        metavar="I/N",
        help="run only shard I of N (1-based; disjoint, same split on every worker)",
    )
    p.add_argument("--output-dir", metavar="DIR", help="study directory (default: the grid's)")
    # internal: a worker of `--workers N`, claiming runs from the call's shared queue
    p.add_argument("--queue", metavar="DIR", help=argparse.SUPPRESS)
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting of every run, e.g. --set training.epochs=1",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="run N workers at once as subprocesses on this machine (e.g. one per core), "
        "sharing one queue of runs (default: the grid's `workers`, else 1)",
    )
    p.add_argument("--max-runs", type=int, metavar="N", help="stop after starting N runs")
    p.add_argument("--fail-fast", action="store_true", help="stop at the first failed run")
    p.add_argument(
        "--isolate",
        action="store_true",
        help="run each run in its own `python -m kdkit run` process",
    )
    p.add_argument(
        "--measure",
        action="store_true",
        help="only (re)do the efficiency measurements of the study's models",
    )
    p.add_argument(
        "--no-measure",
        action="store_true",
        help="do not make the efficiency measurements when the study completes",
    )
    p.add_argument(
        "--no-report", action="store_true", help="do not write the report when the study completes"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kdkit.study.estimate import estimate, measured_rates, render_dry_run
    from kdkit.study.grid import load_grid
    from kdkit.study.resolve import plan
    from kdkit.study.results import run_status
    from kdkit.study.runner import RunQueue, engine_executor, run_study, subprocess_executor
    from kdkit.study.shard import parse_shard, select

    shard = parse_shard(args.shard)
    plugins = load_plugins()
    grid = load_grid(args.grid, args.output_dir)
    if args.workers is None:
        args.workers = 1 if args.shard or args.queue else grid.workers
    elif args.workers < 1:
        raise KdkitError(
            f"--workers {args.workers}: need at least 1",
            where="kdkit study",
            fix="e.g. --workers 2 on a two-core machine",
        )
    runs = plan(grid, plugins.registry, args.overrides)
    if args.dry_run:
        mine = select(runs, shard, key=lambda r: r.run_id)
        header = f"study {grid.name}: {len(runs)} runs in {grid.output_dir}" + (
            "" if shard.is_whole else f"; shard {shard}: {len(mine)} of them"
        )
        print(
            render_dry_run(
                estimate(mine, measured_rates(grid.output_dir, runs)),
                header,
                workers=args.workers if shard.is_whole else 1,
            )
        )
        return 0
    if args.workers > 1 and not args.measure:
        if not shard.is_whole:
            raise KdkitError(
                "--workers and --shard cannot be combined",
                where="kdkit study",
                fix="use --workers N on one machine, or --shard I/N per worker",
            )
        rc = run_workers(args, grid.output_dir)
        if rc != 0:
            return rc
    elif not args.measure:
        from kdkit.study.teachers import TeacherGate, prepare_teachers

        execute = subprocess_executor() if args.isolate else engine_executor(plugins)
        outcome = run_study(
            grid,
            runs,
            execute,
            shard=shard,
            max_runs=args.max_runs,
            fail_fast=args.fail_fast,
            # --max-runs 0 only builds the teachers (documented for filesystems without flock);
            # otherwise each teacher is built when a run first needs it, and a worker runs other
            # work while another builds it
            prepare=(
                (lambda todo, k: prepare_teachers(todo, grid.output_dir, rotate=k))
                if args.max_runs == 0
                else None
            ),
            gate=TeacherGate(grid.output_dir) if args.max_runs != 0 else None,
            claim=RunQueue(Path(args.queue)) if args.queue else None,
            progress=True,
        )
        print(
            f"{len(outcome.ran)} ran, {len(outcome.resumed)} resumed, "
            f"{len(outcome.skipped)} already complete, {len(outcome.failed)} failed "
            f"({outcome.seconds:.0f}s)"
        )
        for run_id, message in outcome.failed.items():
            print(f"  failed: {run_id}: {message.splitlines()[0]}", file=sys.stderr)
        if not outcome.ok:
            return 1
    if not shard.is_whole:
        return 0  # measure and report once, after every shard (kdkit study GRID --measure)
    incomplete = [r.run_id for r in runs if run_status(r.run_dir) != "complete"]
    if incomplete and not args.measure:
        print(
            f"{len(incomplete)} runs of the study are not complete yet (other shards?); "
            "measure and report once they are: kdkit study GRID --measure; kdkit report DIR"
        )
        return 0
    if args.measure or not args.no_measure:
        from kdkit.study.efficiency import measure_study

        path = measure_study(
            grid.output_dir,
            [r for r in runs if run_status(r.run_dir) == "complete"],
            registry=plugins.registry,
        )
        print(f"efficiency: {path}")
    if not args.measure and not args.no_report:
        from kdkit.study.report import write_report

        written = write_report(grid.output_dir)
        print(f"report: {written}")
    return 0
