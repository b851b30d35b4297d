"""The run directory's record: versions, the summary (JSON) and its readable table."""

from __future__ import annotations

import json
import platform
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdkit.engine.persist import atomic_write_text

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from kdkit.discovery import Plugins

LIBRARIES = (
    "kdkit",
    "torch",
    "transformers",
    "tokenizers",
    "datasets",
    "safetensors",
    "pluggy",
    "pydantic",
    "numpy",
    "triton",
)


def versions(plugins: Plugins | None = None) -> dict[str, Any]:
    """Python, library and plugin versions (what ``versions.json`` records)."""
    libs: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            libs[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            libs[name] = None
    out: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "libraries": libs,
    }
    if plugins is not None:
        out["plugins"] = {
            n: {"distribution": o.distribution, "version": o.version}
            for n, o in sorted(plugins.origins.items())
        }
    return out


def fmt_params(n: int | None) -> str:
    """``1,528,578 (1.53 M)``."""
    if n is None:
        return "-"
    return f"{n:,} ({n / 1e6:.2f} M)"


def run_table(summary: Mapping[str, Any]) -> str:
    """A readable table of one run's summary."""
    head = summary["headline_metric"]
    rows = [
        ("task", summary["task"]),
        ("method", summary["method"]),
        (
            "student",
            f"{summary['student']['name']}  {fmt_params(summary['student']['parameters'])}",
        ),
    ]
    if summary.get("teacher"):
        t = summary["teacher"]
        rows.append(("teacher", f"{t['name']}  {fmt_params(t.get('parameters'))}"))
        if t.get("test"):
            rows.append((f"teacher test {head}", f"{t['test'][head]:.4f}"))
    rows.append(
        (
            f"best validation {head}",
            f"{summary['best_validation'][head]:.4f} (step {summary['best_step']})",
        )
    )
    rows.append((f"test {head}", f"{summary['test'][head]:.4f}"))
    rows.extend(baseline_rows(summary.get("baselines")))
    if summary.get("kept_percent") is not None:
        rows.append(("% of teacher kept", f"{summary['kept_percent']:.1f} %"))
    rows.append(("steps / epochs", f"{summary['steps']} / {summary['epochs_done']}"))
    rows.append(
        (
            "train time",
            f"{summary['train_seconds']:.1f} s ({summary['train_examples_per_s']:.0f} examples/s)",
        )
    )
    rows.append(("teacher signal", str(summary.get("teacher_signal"))))
    width = max(len(k) for k, _ in rows)
    lines = [f"  {k.ljust(width)}  {v}" for k, v in rows]
    lines += [f"  {flag}" for flag in summary.get("flags") or []]
    return "\n".join(lines)


def baseline_rows(entry: Any, split: str = "test") -> list[tuple[str, str]]:
    """``(name, "score [95 % CI]")`` rows of a summary's ``baselines`` value on ``split``; one
    note row when they are unavailable or switched off."""
    if not isinstance(entry, Mapping):
        return []
    if entry.get("disabled"):
        return [("baselines", "switched off (training.baselines: false)")]
    if entry.get("unavailable"):
        return [("baselines", "unavailable (see the note below)")]
    from kdkit.baselines.runs import from_summary

    baselines = from_summary(dict(entry))
    if baselines is None or split not in baselines.splits:
        return []
    # Baselines.table: the same rows, names and order as the default job's comparison table
    return [
        (f"{name} ({split})", f"{score:.4f} [{lo:.3f}, {hi:.3f}]")
        for name, score, (lo, hi) in baselines.table(split)
    ]


def comparison_table(rows: Sequence[Mapping[str, Any]], head: str) -> str:
    """The default job's comparison: model, params, headline metric, % kept, speed-up.

    Rows with a ``ci`` (the baselines) show their 95 % interval after the score."""
    cols = [
        "model",
        "parameters",
        f"test {head}",
        "% of teacher",
        "latency b=1",
        "throughput",
        "speed-up",
    ]
    body = []
    for r in rows:
        body.append(
            [
                r["model"],
                fmt_params(r.get("parameters")),
                f"{r[head]:.4f}" + (f" ({r['ci'][0]:.3f}-{r['ci'][1]:.3f})" if r.get("ci") else ""),
                "-" if r.get("kept") is None else f"{r['kept']:.1f} %",
                "-" if r.get("latency_ms") is None else f"{r['latency_ms']:.1f} ms",
                "-" if r.get("throughput") is None else f"{r['throughput']:.0f} ex/s",
                "-" if r.get("speedup") is None else f"{r['speedup']:.1f}x",
            ]
        )
    widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(cols)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths))  # noqa: E731
    return "\n".join([line(cols), line(["-" * w for w in widths]), *(line(b) for b in body)])


def write_json(path: str | Path, value: object) -> None:
    """Write JSON atomically (floats as numbers, anything else as text)."""
    atomic_write_text(path, json.dumps(value, indent=2, default=str) + "\n")
