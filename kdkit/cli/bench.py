"""``kdkit bench``: time fused losses against eager PyTorch, torch.compile and other libraries."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from kdkit.errors import KdkitError

DEFAULT_OUT = os.path.join("benchmarks", "results")


def add_parser(subparsers) -> None:
    """Add the ``bench`` sub-command."""
    p = subparsers.add_parser(
        "bench",
        help="benchmark the fused losses (correctness-gated timings, roofline, memory)",
        description=(
            "Run every registered op x provider (kdkit Triton, eager reference, reference under "
            "torch.compile, Liger-Kernel when installed) x shape x dtype, forward and "
            "forward+backward. Each provider is checked against a float64 reference before it is "
            "timed. GPU: ceilings (copy bandwidth, bf16 matmul) are measured in the same run and "
            "every row gets its roofline fraction. Writes results.json, results.csv, table.txt and "
            "plots to --out, and prints the table last."
        ),
    )
    p.add_argument(
        "--device",
        default="auto",
        help="cpu, cuda, cuda:N or auto (default: auto = cuda when available)",
    )
    p.add_argument(
        "--quick", action="store_true", help="quick shapes and short timings (CPU smoke run)"
    )
    p.add_argument("--ops", default=None, help="comma-separated op names (default: all registered)")
    p.add_argument(
        "--providers", default=None, help="comma-separated provider names (default: all)"
    )
    p.add_argument(
        "--dtypes",
        default=None,
        help="comma-separated among fp32,bf16,fp16 (default: fp32 on CPU, bf16,fp32 on GPU)",
    )
    p.add_argument(
        "--shapes",
        default=None,
        choices=["headline", "priority", "quick"],
        help="shape list: headline (each op's issue-17 target shapes), priority, quick "
        "(default: quick with --quick or on CPU, else priority)",
    )
    p.add_argument(
        "--modes", default="fwd,fwd+bwd", help="comma-separated among fwd,fwd+bwd (default: both)"
    )
    p.add_argument(
        "--out", default=None, help=f"output directory (default: {DEFAULT_OUT}/<device>-<shapes>)"
    )
    p.add_argument(
        "--check-only", action="store_true", help="run the correctness gates only (no timing)"
    )
    p.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="skip what is left after this many seconds (default: no limit)",
    )
    p.add_argument("--no-plots", action="store_true", help="do not write plots")
    p.add_argument(
        "--list", action="store_true", help="list the registered ops and providers and exit"
    )
    p.add_argument(
        "--static",
        action="store_true",
        help="no GPU needed: compile every Triton kernel for sm_90 (Triton's bundled compiler) and "
        "report registers, spills, shared memory, load/store vector widths and the traffic "
        "model of each op (--quick: the few configurations the test compiles; --ops: op folders "
        "such as kd,infonce); exit 1 on a spill, a model above its budget or a failed compile",
    )
    p.set_defaults(func=run_bench_command)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def run_bench_command(args: argparse.Namespace) -> int:
    """Entry point of ``kdkit bench``; returns the exit code (1 when a correctness gate failed)."""
    import torch

    from kdkit.bench import describe, load_ops
    from kdkit.bench.report import format_table, write_outputs
    from kdkit.bench.runner import DTYPES, run_bench

    if args.static:
        return run_static_command(args)
    ops = load_ops()
    if args.list:
        for d in describe(ops):
            print(f"{d['op']:14s} {', '.join(d['providers']):60s} {d['description']}")
        return 0
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise KdkitError(
            "--device cuda was asked for but torch sees no CUDA device",
            where="kdkit bench --device",
            fix="run on a GPU machine, or use --device cpu",
        )
    dev = torch.device(device)
    names = _split(args.ops) or sorted(ops)
    unknown = [n for n in names if n not in ops]
    if unknown:
        raise KdkitError(
            f"unknown bench op(s): {', '.join(unknown)}",
            where="kdkit bench --ops",
            fix=f"available: {', '.join(sorted(ops))}",
        )
    dtypes = _split(args.dtypes) or (["fp32"] if dev.type == "cpu" else ["bf16", "fp32"])
    bad = [d for d in dtypes if d not in DTYPES]
    if bad:
        raise KdkitError(
            f"unknown dtype(s): {', '.join(bad)}",
            where="kdkit bench --dtypes",
            fix="use fp32, bf16, fp16",
        )
    shapes = args.shapes or ("quick" if args.quick or dev.type == "cpu" else "priority")
    modes = _split(args.modes) or ["fwd", "fwd+bwd"]
    out = args.out or os.path.join(DEFAULT_OUT, f"{dev.type}-{shapes}")
    print(
        f"kdkit bench: {', '.join(names)} on {dev} ({shapes} shapes, {', '.join(dtypes)}) -> {out}",
        file=sys.stderr,
    )
    env: dict = {}
    rows: list = []
    interrupted = False
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)  # `timeout` sends SIGTERM
    try:
        run_bench(
            [ops[n] for n in names],
            dev,
            dtypes=dtypes,
            shapes=shapes,
            modes=modes,
            providers=_split(args.providers),
            quick=args.quick,
            check_only=args.check_only,
            max_seconds=args.max_seconds,
            log=lambda msg: print(msg, file=sys.stderr),
            env=env,
            rows=rows,
        )
    except KeyboardInterrupt:
        interrupted = True
        print("kdkit bench: interrupted; writing what was measured", file=sys.stderr)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not env:
        return 130
    env["interrupted"] = interrupted
    write_outputs(out, env, rows, plots=not args.no_plots and not args.check_only)
    print(format_table(env, rows))
    failed = [r for r in rows if r["status"] in ("FAILED", "error")]
    return 1 if failed else (130 if interrupted else 0)


def run_static_command(args: argparse.Namespace) -> int:
    """``kdkit bench --static``: table + static.json (+ static.txt) in ``--out``."""
    import json

    import torch

    from kdkit.bench.static import format_static_table, run_static
    from kdkit.kernels.dispatch import triton_import_error

    err = triton_import_error()
    if err:
        raise KdkitError(
            err,
            where="kdkit bench --static",
            fix="pip install 'kdkit[triton]' (the check needs Triton, not a GPU)",
        )
    from kdkit.kernels.dispatch import interpreting

    if interpreting():
        raise KdkitError(
            "TRITON_INTERPRET=1 turns the kernels into interpreted functions, which "
            "cannot be compiled",
            where="kdkit bench --static",
            fix="unset TRITON_INTERPRET (or set it to 0) for the static check",
        )
    level = "test" if args.quick else "priority"
    out = args.out or os.path.join(DEFAULT_OUT, "static")
    rows = run_static(level, _split(args.ops), log=lambda msg: print(msg, file=sys.stderr))
    if not rows:
        raise KdkitError(
            f"no op folder matches --ops {args.ops}",
            where="kdkit bench --static",
            fix="use folder names of kdkit.kernels: kd, dist, infonce, ckd",
        )
    table = format_static_table(rows)
    os.makedirs(out, exist_ok=True)
    from kdkit.bench.runner import environment

    doc = {
        "level": level,
        "target": "cuda sm_90 (compiled, not run)",
        "env": environment(torch.device("cpu")),
        "rows": rows,
    }
    with open(os.path.join(out, "static.json"), "w") as fh:
        json.dump(doc, fh, indent=1, default=str)
    with open(os.path.join(out, "static.txt"), "w") as fh:
        fh.write(table + "\n")
    print(table)
    bad = [
        r
        for r in rows
        if r["status"] != "ok"
        or r.get("spill_store_bytes")
        or r.get("spill_load_bytes")
        or not r["within_budget"]
    ]
    return 1 if bad else 0
