"""``kdkit profile [RUN.yaml]``: where a distillation step's time and memory go.

Builds the run as ``kdkit run`` would (no FILE: the embedded default run, the default job's KD
run), runs ``--warmup`` and ``--steps`` training steps under ``torch.profiler`` and prints the
top operators, the fused ops' dispatch record, peak memory and, last, the region table.
Writes ``profile.json``, a Chrome/Perfetto trace per implementation and ``region-shares.png``
into ``--out`` (never into a run directory). See docs/profiling.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "profile",
        help="profile a run's training steps: regions, operators, memory, fused-op impls",
        description="Build the run FILE describes exactly as `kdkit run` would (no FILE: the "
        "embedded default run), run warm-up and measured training steps under torch.profiler, "
        "and report the time per step split into regions (data, teacher, student forward, "
        "loss forward, backward, optimizer), the top operators, which implementation of each "
        "fused op ran, and peak memory. Nothing is written into the run's output_dir.",
    )
    p.add_argument("file", nargs="?", help="run file (YAML); default: the embedded default run")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting, as for `kdkit run` (repeatable)",
    )
    p.add_argument("--steps", type=int, default=10, help="measured steps (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="warm-up steps before them (default 3)")
    p.add_argument(
        "--compare-impl",
        metavar="IMPL,IMPL",
        help="profile the same steps with each kernel implementation (e.g. "
        "reference,triton) in this process and report the ratios",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help="where the profile goes (default: a fresh profiles/<task>-<method>-<student>)",
    )
    p.add_argument(
        "--capture-step",
        action="store_true",
        help="CUDA: bracket one step after the warm-up with cudaProfilerStart/Stop "
        "(for nsys --capture-range=cudaProfilerApi or ncu --profile-from-start off); "
        "torch.profiler is off in this mode",
    )
    p.add_argument("--top", type=int, default=12, help="operators listed (default 12)")
    p.add_argument("--quiet", action="store_true", help="no progress bars while building")
    p.set_defaults(func=profile)


def profile(args: argparse.Namespace) -> int:
    """``kdkit profile``: validate, build, profile, print (region table last)."""
    from kdkit.config import load_config
    from kdkit.discovery import load_plugins
    from kdkit.profiling.driver import ProfileOptions, check_counts, parse_impls, profile_run
    from kdkit.profiling.report import render

    impls = parse_impls(args.compare_impl) if args.compare_impl else None
    options = ProfileOptions(
        steps=args.steps,
        warmup=args.warmup,
        impls=impls,
        out=Path(args.out) if args.out else None,
        capture_step=args.capture_step,
        top=args.top,
    )
    check_counts(options)  # before the (slower) plugin loading; the device checks come later
    plugins = load_plugins()
    resolved = load_config(args.file, plugins.registry, args.overrides)
    summary = profile_run(resolved, plugins, options, progress=not args.quiet)
    print(render(summary))
    return 0
