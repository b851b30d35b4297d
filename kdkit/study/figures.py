"""The report's figures (matplotlib, Agg backend: no display needed).

* ``score_vs_size.png`` — headline score (mean ± std over seeds) against student parameters, one
  line per method, the teacher's own score as a dashed line; one panel per task (rows) and student
  family (columns).
* ``score_vs_speedup.png`` — score against inference speed-up over the teacher (batch 1, measured
  in one process), one panel per task; the teacher sits at 1x.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdkit.study.tables import Cell, TeacherScore

_MARKERS = "osD^vP*Xh"
_STYLES = ["--", ":", "-.", (0, (5, 2, 1, 2))]


def _plt() -> Any:  # matplotlib.pyplot
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _params_axis(ax: Any, sizes: list[int]) -> None:
    """Label a log axis of parameter counts as 62.6K, 1.5M, ...: one tick per student size (a log
    axis's automatic minor labels collide when sizes are close)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    def label(x: float, _pos: object = None) -> str:
        return f"{x / 1e6:.3g}M" if x >= 1e5 else f"{x / 1e3:.3g}K"

    ax.xaxis.set_major_formatter(FuncFormatter(label))
    ax.xaxis.set_minor_formatter(NullFormatter())
    if sizes:
        ax.set_xticks(sizes)


def _colors(methods: Sequence[str]) -> dict[str, str]:
    palette = ["#444444", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
               "#e377c2", "#17becf", "#bcbd22"]  # fmt: skip
    ordered = sorted(set(methods), key=lambda m: (m != "ft", methods.index(m)))
    return {m: palette[i % len(palette)] for i, m in enumerate(ordered)}


def score_vs_size(cells: Sequence[Cell], teachers: dict[tuple[str, str], TeacherScore],
                  path: Path) -> Path | None:  # fmt: skip
    """Write ``score_vs_size.png``; ``None`` when there is nothing to plot."""
    cells = [c for c in cells if c.student_params]
    if not cells:
        return None
    plt = _plt()
    tasks = list(dict.fromkeys(c.task for c in cells))
    families = list(dict.fromkeys(c.student_family or "?" for c in cells))
    methods = list(dict.fromkeys(c.method for c in cells))
    colors = _colors(methods)
    table_teachers = list(dict.fromkeys(c.teacher for c in cells))
    style = {t: _STYLES[i % len(_STYLES)] for i, t in enumerate(table_teachers)}
    fig, axes = plt.subplots(len(tasks), len(families), squeeze=False,
                             figsize=(4.6 * len(families), 3.6 * len(tasks)))  # fmt: skip
    for i, task in enumerate(tasks):
        for j, family in enumerate(families):
            ax = axes[i][j]
            mine = [c for c in cells if c.task == task and (c.student_family or "?") == family]
            drawn: set[tuple[str, str]] = set()
            for teacher in table_teachers:
                for method in methods:
                    pts = sorted((c for c in mine if c.teacher == teacher and c.method == method),
                                 key=lambda c: c.student_params or 0)  # fmt: skip
                    if not pts or (pts[0].baseline and (method, "none") in drawn):
                        continue  # FT appears in every teacher's table: draw it once
                    drawn.add((method, "none" if pts[0].baseline else teacher))
                    label = (
                        method
                        if len(table_teachers) == 1 or pts[0].baseline
                        else f"{method} ({teacher})"
                    )
                    ax.errorbar([c.student_params for c in pts], [100 * c.mean for c in pts],
                                yerr=[100 * (c.std or 0) for c in pts], marker=_MARKERS[methods.index(method) % len(_MARKERS)],
                                color=colors[method], capsize=3, label=label, linewidth=1.4,
                                linestyle="-" if len(table_teachers) == 1 or pts[0].baseline else style[teacher])  # fmt: skip
            for teacher in table_teachers:
                ts = teachers.get((task, teacher))
                if ts is not None:
                    ax.axhline(100 * ts.score, color="black", linestyle=style[teacher], linewidth=1,
                               label=f"teacher {teacher} ({100 * ts.score:.1f})")  # fmt: skip
            ax.set_xscale("log")
            _params_axis(ax, sorted({c.student_params for c in mine if c.student_params}))
            ax.set_title(f"{task} — {family} students", fontsize=10)
            ax.set_xlabel("student parameters")
            metric = mine[0].metric if mine else ""
            ax.set_ylabel(f"test {metric} (%)")
            ax.grid(True, alpha=0.3)
            if mine:
                ax.legend(fontsize=7, loc="best")
    return _save(plt, fig, path)


def _save(plt: Any, fig: Any, path: Path) -> Path:
    """Lay ``fig`` out, write it to ``path`` (PNG, 110 dpi) and free it."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def score_vs_speedup(cells: Sequence[Cell], teachers: dict[tuple[str, str], TeacherScore],
                     path: Path) -> Path | None:  # fmt: skip
    """Write ``score_vs_speedup.png``; ``None`` when no cell has a measured speed-up."""
    cells = [c for c in cells if c.speedup is not None and math.isfinite(c.speedup)]
    if not cells:
        return None
    plt = _plt()
    tasks = list(dict.fromkeys(c.task for c in cells))
    methods = list(dict.fromkeys(c.method for c in cells))
    families = list(dict.fromkeys(c.student_family or "?" for c in cells))
    colors = _colors(methods)
    fig, axes = plt.subplots(1, len(tasks), squeeze=False, figsize=(5.2 * len(tasks), 4.0))
    for i, task in enumerate(tasks):
        ax = axes[0][i]
        mine = [c for c in cells if c.task == task]
        seen: set[str] = set()
        for c in mine:
            assert c.speedup is not None  # cells without a speed-up were dropped above
            marker = _MARKERS[families.index(c.student_family or "?") % len(_MARKERS)]
            label = None if c.method in seen else c.method
            seen.add(c.method)
            # methods of one student share a speed-up: spread them a little so all stay visible
            nudge = 1 + 0.025 * (methods.index(c.method) - (len(methods) - 1) / 2)
            ax.errorbar([c.speedup * nudge], [100 * c.mean], yerr=[100 * (c.std or 0)], marker=marker,
                        color=colors[c.method], linestyle="none", capsize=2, label=label)  # fmt: skip
        for (t_task, teacher), ts in teachers.items():
            if t_task == task:
                ax.plot([1.0], [100 * ts.score], marker="*", markersize=13, color="black",
                        linestyle="none", label=f"teacher {teacher}")  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("inference speed-up over the teacher (batch 1)")
        ax.set_ylabel(f"test {mine[0].metric} (%)")
        shapes = ", ".join(f"{_MARKERS[k % len(_MARKERS)]}={f}" for k, f in enumerate(families))
        ax.set_title(f"{task} (markers: {shapes})", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    return _save(plt, fig, path)
