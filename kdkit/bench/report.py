"""Outputs of ``kdkit bench``: a table, JSON, CSV and plots."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from typing import Any

COLUMNS = [
    ("op", "op", "{}"),
    ("size", "size", "{}"),
    ("dtype", "dtype", "{}"),
    ("mode", "mode", "{}"),
    ("provider", "provider", "{}"),
    ("status", "status", "{}"),
    ("median_ms", "median ms", "{:.3f}"),
    ("p20_ms", "p20", "{:.3f}"),
    ("p80_ms", "p80", "{:.3f}"),
    ("vs_reference", "x ref", "{:.3g}"),
    ("gbps", "GB/s", "{:.1f}"),
    ("tflops", "TFLOP/s", "{:.2f}"),
    ("roofline", "roofline", "{:.0%}"),
    ("peak_mem_mb", "peak MB", "{:.1f}"),
    ("compile_s", "compile s", "{:.2f}"),
    ("grad_err", "grad err", "{:.1e}"),
]


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    try:
        return spec.format(value)
    except (ValueError, TypeError):
        return str(value)


def format_table(env: dict[str, Any], rows: Sequence[dict[str, Any]]) -> str:
    """The human-readable table (skipped rows and their reasons listed below it)."""
    head = [title for _, title, _ in COLUMNS]
    body = [
        [_fmt(r.get(k), spec) for k, _, spec in COLUMNS]
        for r in rows
        if r["status"] in ("ok", "FAILED", "error")
    ]
    widths = [
        max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)
    ]
    lines = [
        f"kdkit bench — {env['device_name']} — torch {env['torch']}, triton {env['triton']}, "
        f"git {env['git_sha']}, {env['date']}"
    ]
    if env.get("copy_bandwidth_gbps"):
        lines.append(
            f"ceilings: copy {env['copy_bandwidth_gbps']:.0f} GB/s, bf16 matmul {env['bf16_matmul_tflops']:.0f} TFLOP/s"
        )
    else:
        lines.append(
            "CPU run: only ratios between providers measured in the same run mean anything."
        )
    lines.append("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body]
    skipped = {}
    for r in rows:
        if r["status"] not in ("ok",) and r["reason"]:
            skipped.setdefault((r["op"], r["provider"], r["status"], r["reason"]), 0)
            skipped[(r["op"], r["provider"], r["status"], r["reason"])] += 1
    if skipped:
        lines.append("")
        lines.append("not timed:")
        for (op, prov, status, reason), n in skipped.items():
            lines.append(f"  {op} / {prov}: {status} x{n}: {reason}")
    return "\n".join(lines)


def write_outputs(
    out_dir: str, env: dict[str, Any], rows: Sequence[dict[str, Any]], *, plots: bool = True
) -> list[str]:
    """Write ``results.json``, ``results.csv``, ``table.txt`` and plots; return the paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    p = os.path.join(out_dir, "results.json")
    with open(p, "w") as f:
        json.dump({"environment": env, "rows": list(rows)}, f, indent=1, default=str)
    paths.append(p)
    p = os.path.join(out_dir, "results.csv")
    keys = [k for k in rows[0].keys() if k != "params"] if rows else []
    env_keys = ["device_name", "torch", "triton", "git_sha", "date"]
    with open(p, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(keys + env_keys)
        for r in rows:
            w.writerow([r.get(k) for k in keys] + [env.get(k) for k in env_keys])
    paths.append(p)
    p = os.path.join(out_dir, "table.txt")
    with open(p, "w") as f:
        f.write(format_table(env, rows) + "\n")
    paths.append(p)
    if plots:
        paths += write_plots(out_dir, env, rows)
    return paths


def write_plots(out_dir: str, env: dict[str, Any], rows: Sequence[dict[str, Any]]) -> list[str]:
    """Time and peak memory vs size, one figure per op, dtype and mode (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if r["status"] == "ok" and r["median_ms"] is not None:
            groups.setdefault((r["op"], r["dtype"], r["mode"]), []).append(r)
    for (op, dtype, mode), rs in groups.items():
        sizes = list(dict.fromkeys(r["size"] for r in rs))
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for prov in dict.fromkeys(r["provider"] for r in rs):
            pr = {r["size"]: r for r in rs if r["provider"] == prov}
            xs = [i for i, s in enumerate(sizes) if s in pr]
            axes[0].plot(xs, [pr[sizes[i]]["median_ms"] for i in xs], "o-", label=prov)
            mx = [i for i in xs if pr[sizes[i]]["peak_mem_mb"] is not None]
            axes[1].plot(mx, [pr[sizes[i]]["peak_mem_mb"] for i in mx], "o-", label=prov)
        for ax, ylab in zip(axes, ["median time (ms)", "peak memory over inputs (MB)"]):
            ax.set_xticks(range(len(sizes)))
            ax.set_xticklabels(sizes, rotation=30, ha="right", fontsize=7)
            ax.set_yscale("log")
            ax.set_ylabel(ylab)
            ax.legend(fontsize=7)
        fig.suptitle(f"{op} {dtype} {mode} — {env['device_name']}", fontsize=9)
        fig.tight_layout()
        p = os.path.join(out_dir, f"{op}-{dtype}-{mode.replace('+', '_')}.png")
        fig.savefig(p, dpi=90)
        plt.close(fig)
        paths.append(p)
    return paths
