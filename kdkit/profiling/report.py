"""What ``kdkit profile`` prints and writes: tables, ``profile.json`` and the region-share plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kdkit.engine.persist import atomic_write_text
from kdkit.profiling.regions import REGIONS

#: The plot of region shares a profile directory holds.
PLOT = "region-shares.png"


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.1f} MiB"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(  # noqa: E731
        str(c).ljust(w) if i == 0 else str(c).rjust(w)
        for i, (c, w) in enumerate(zip(cells, widths))
    )
    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


def operator_table(result: dict[str, Any]) -> str:
    """The top operators by self time of one implementation's measured steps."""
    rows = [
        [
            op["name"][:60],
            f"{op['calls_per_step']:.0f}",
            f"{op['self_ms_per_step']:.3f}",
            f"{100 * op['share_of_op_time']:.1f} %",
        ]
        for op in result["top_operators"]
    ]
    return _table(["operator", "calls/step", "self ms/step", "of op time"], rows)


def dispatch_lines(results: list[dict[str, Any]]) -> str:
    """Which implementation of each fused op ran, per requested implementation."""
    lines = []
    for r in results:
        ran = ", ".join(f"{op} -> {impl}" for op, impl in sorted(r["dispatch"].items()))
        lines.append(f"  requested {r['impl']}: {ran or 'no fused op was called'}")
    return "\n".join(lines)


def memory_lines(results: list[dict[str, Any]]) -> str:
    """Peak memory of each implementation's measured steps."""
    lines = []
    for r in results:
        m = r["memory"]
        text = (
            f"  {r['impl']}: CPU RSS rise {_mb(m['rss_rise_bytes'])} (peak "
            f"{_mb(m['rss_peak_bytes'])})"
        )
        if "cuda_max_allocated_bytes" in m:
            text += (
                f"; CUDA max allocated {_mb(m['cuda_max_allocated_bytes'])} "
                f"({_mb(m['cuda_rise_bytes'])} above the step's start)"
            )
        lines.append(text)
    return "\n".join(lines)


def region_table(summary: dict[str, Any]) -> str:
    """Per region: ms per step and share of the measured step, one column pair per impl."""
    results = summary["results"]
    header = ["region"]
    for r in results:
        header += [f"{r['impl']} ms", "share"]
    rows = []
    teacher_label = "teacher (cache read)" if summary["teacher_signal"] == "cache" else "teacher"
    for name in REGIONS:
        if not any(name in r["regions"] for r in results):
            continue
        row = [teacher_label if name == "teacher" else name]
        for r in results:
            reg = r["regions"].get(name)
            row += (
                [f"{reg['ms_per_step']:.3f}", f"{100 * reg['share']:.1f} %"] if reg else ["-", "-"]
            )
        rows.append(row)
    un = ["(outside the regions)"]
    step = ["step (measured)"]
    for r in results:
        mean = r["step_ms"]["mean"]
        un += [
            f"{r['unattributed_ms_per_step']:.3f}",
            f"{100 * r['unattributed_ms_per_step'] / mean:.1f} %",
        ]
        step += [f"{mean:.3f}", "100.0 %"]
    return _table(header, [*rows, un, step])


def render(summary: dict[str, Any]) -> str:
    """The whole printed report; the region table comes last."""
    results = summary["results"]
    run = summary["run"]
    parts = [
        f"kdkit profile: {run['task']} / {run['method']} / {run['student']} on {summary['device']}"
        f" ({summary['threads']} threads, {summary['precision']}), teacher signal: "
        f"{summary['teacher_signal'] or 'none'}; {summary['warmup']} warm-up + "
        f"{summary['steps']} measured steps, batch {run['batch_size']}",
    ]
    for r in results:
        if r["top_operators"]:
            parts += ["", f"top operators by self time ({r['impl']}):", operator_table(r)]
    parts += ["", "fused ops (dispatch record):", dispatch_lines(results)]
    parts += [
        "",
        "peak memory (one step after the warm-up, outside the profiler):",
        memory_lines(results),
    ]
    for r in summary["ratios"]:
        mem = "-" if r["memory"] is None else f"{r['memory']:.2f}x"
        parts.append(
            f"  {r['impl']} / {r['over']}: step time {r['step_time']:.2f}x, "
            f"memory ({r['memory_measure']}) {mem}"
        )
    for note in summary["notes"]:
        parts.append(f"note: {note}")
    cov = ", ".join(f"{r['impl']} {100 * r['coverage']:.1f} %" for r in results)
    loss = ", ".join(f"{r['impl']} {100 * r['loss_share']:.1f} %" for r in results)
    parts += [
        "",
        f"written: {summary['out']}/profile.json, traces, {PLOT}",
        f"the regions cover {cov} of the measured step; the loss forward takes {loss}",
        "",
        region_table(summary),
    ]
    return "\n".join(parts)


def plot_shares(summary: dict[str, Any], path: Path) -> Path:
    """A horizontal stacked bar per implementation: each region's share of the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = summary["results"]
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.7 * len(results)))
    colors = plt.get_cmap("tab10").colors  # type: ignore[attr-defined]  # tab10 is a ListedColormap
    names = [*REGIONS, "outside the regions"]
    for i, r in enumerate(results):
        left = 0.0
        mean = r["step_ms"]["mean"]
        for k, name in enumerate(names):
            share = (
                r["unattributed_ms_per_step"] / mean
                if name == "outside the regions"
                else r["regions"].get(name, {}).get("share", 0.0)
            )
            share = max(share, 0.0)
            ax.barh(
                i,
                share,
                left=left,
                color=colors[k % 10],
                edgecolor="white",
                label=name if i == 0 else None,
            )
            if share >= 0.06:
                ax.text(
                    left + share / 2,
                    i,
                    f"{100 * share:.0f}%",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white",
                )
            left += share
    ax.set_yticks(range(len(results)))
    ax.set_yticklabels([f"{r['impl']}\n{r['step_ms']['mean']:.2f} ms/step" for r in results])
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of the measured step")
    run = summary["run"]
    ax.set_title(
        f"{run['task']} / {run['method']} / {run['student']} on {summary['device']}", fontsize=10
    )
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def write_outputs(summary: dict[str, Any], out: Path) -> None:
    """Write ``profile.json`` and the plot into ``out`` (the traces are written by the driver)."""
    summary["out"] = str(out)
    summary["plot"] = str(plot_shares(summary, out / PLOT))
    atomic_write_text(out / "profile.json", json.dumps(summary, indent=2) + "\n")
