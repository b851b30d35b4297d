"""The report's figures (matplotlib, Agg backend: no display needed).

* ``score_vs_size.png`` — headline score (mean ± std over seeds) against student parameters, one
  line per method, the teacher's own score as a dashed line; one panel per task (rows) and student
  family (columns).
* ``score_vs_speedup.png`` — score against inference speed-up over the teacher (batch 1, measured
  in one process), one panel per task; the teacher sits at 1x.

Every panel draws its task's baselines as reference lines (majority class: grey dotted; the best
constant prediction where it is another label, e.g. always "clone" for F1: light grey, sparse
dots; the best lexical baseline, chosen on validation: green dash-dot), each with a legend entry.
The legend is one, outside the panels (right of them), so it never covers data; a panel where no
method scores above a constant prediction (each within one point of the majority class or the
best constant, or below) is marked "degenerate" in its title and shaded.
Parameter ticks use one unit per axis (all ``K`` or all ``M``); speed-ups read ``2x``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdkit.baselines import NAMES, Baselines
from kdkit.study.baselines import at_majority
from kdkit.study.tables import Cell, TeacherScore

_MARKERS = "osD^vP*Xh"
_STYLES = ["--", ":", "-.", (0, (5, 2, 1, 2))]


def _plt() -> Any:  # matplotlib.pyplot
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def params_label(sizes: Sequence[float]) -> Any:
    """``x -> text`` for parameter counts in ONE unit for the whole axis: ``K`` when the largest
    is under a million (``58K``, ``249K``), else ``M`` (``0.06M``, ``1.5M``)."""
    scale, unit = (1e6, "M") if max(sizes, default=0) >= 1e6 else (1e3, "K")

    def label(x: float, _pos: object = None) -> str:
        return f"{x / scale:.3g}{unit}"

    return label


def spaced_ticks(values: Sequence[float], keep: float = 1.0, gap: float = 1.25) -> list[float]:
    """Ticks for a log axis: ``keep`` (the teacher's 1x) and the values (rounded to 0.1), each
    at least a factor ``gap`` from every tick already placed, so labels never collide.
    Values that round to 0.0 (a speed-up below 0.05x) are left out: a log axis has no 0."""
    ticks = [keep]
    for v in sorted({round(x, 1) for x in values if x > 0} - {0.0}):
        if all(max(v, t) / min(v, t) >= gap for t in ticks):
            ticks.append(v)
    return sorted(ticks)


def short(name: str, width: int = 22) -> str:
    """A legend-sized name: a path's last part, cut to ``width`` characters with an ellipsis."""
    name = name.rstrip("/").rsplit("/", 1)[-1] or name
    return name if len(name) <= width else name[: width - 1] + "…"


def _params_axis(ax: Any, sizes: list[int]) -> None:
    """Label a log axis of parameter counts in one unit: one tick per student size (a log
    axis's automatic minor labels collide when sizes are close)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    label = params_label(sizes)

    ax.xaxis.set_major_formatter(FuncFormatter(label))
    ax.xaxis.set_minor_formatter(NullFormatter())
    if sizes:
        ax.set_xticks(sizes)


def _colors(methods: Sequence[str]) -> dict[str, str]:
    palette = [
        "#444444",
        "#1f77b4",
        "#ff7f0e",
        "#2ca02c",
        "#d62728",
        "#9467bd",
        "#8c564b",
        "#e377c2",
        "#17becf",
        "#bcbd22",
    ]
    ordered = sorted(set(methods), key=lambda m: (m != "ft", methods.index(m)))
    return {m: palette[i % len(palette)] for i, m in enumerate(ordered)}


def _reference_lines(ax: Any, b: Baselines | None) -> None:
    """The task's majority-class, best constant (where it is another label) and best lexical
    baselines (test) as labelled lines."""
    if b is None or "test" not in b.splits:
        return
    ax.axhline(
        100 * b.score("majority"),
        color="#888888",
        linestyle=":",
        linewidth=1.3,
        label="majority class",
    )
    if b.constant_label != b.majority_label:
        ax.axhline(
            100 * b.splits["test"].constant,
            color="#b0b0b0",
            linestyle=(0, (1, 3)),
            linewidth=1.3,
            label=f"always '{b.constant_label}'",
        )
    lexical = b.lexical_score("test")
    ax.axhline(
        100 * lexical,
        color="#2e8b57",
        linestyle="-.",
        linewidth=1.3,
        label=f"lexical: {_SHORT_BASELINE[b.best_lexical]}",
    )


_SHORT_BASELINE = {**NAMES, "tfidf_lr": "TF-IDF + LR", "jaccard": "token Jaccard"}


def _degenerate(ax: Any, mine: Sequence[Cell], b: Baselines | None, title: str) -> str:
    """Shade a panel where no point is above the majority class (each within one point of it,
    or below): the panel shows no learning, whatever the method. Returns its (marked) title."""
    if mine and b is not None and all(at_majority(c.mean, b) for c in mine):
        ax.set_facecolor("#f1f1f1")
        what = "the majority class" if b.constant_label == b.majority_label else "a constant"
        return title + f"\n(degenerate: no method above {what})"
    return title


def _legend_outside(fig: Any, axes: Any) -> Any:
    """One legend for the whole figure, right of the panels (entries of every panel, once)."""
    seen: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    if not seen:
        return None
    return fig.legend(
        list(seen.values()),
        list(seen),
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        fontsize=8,
        frameon=False,
    )


def score_vs_size(
    cells: Sequence[Cell],
    teachers: dict[tuple[str, str], TeacherScore],
    path: Path,
    baselines: dict[str, Baselines] | None = None,
) -> Path | None:
    """Write ``score_vs_size.png``; ``None`` when there is nothing to plot."""
    baselines = baselines or {}
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
    fig, axes = plt.subplots(
        len(tasks), len(families), squeeze=False, figsize=(4.6 * len(families), 3.6 * len(tasks))
    )
    for i, task in enumerate(tasks):
        for j, family in enumerate(families):
            ax = axes[i][j]
            mine = [c for c in cells if c.task == task and (c.student_family or "?") == family]
            if not mine:  # a grid may train a family on some tasks only: say so, draw nothing
                ax.axis("off")
                ax.text(
                    0.5,
                    0.5,
                    f"{task}: no {family} students in this study",
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                    fontsize=9,
                    color="0.4",
                )
                continue
            drawn: set[tuple[str, str]] = set()
            series: list[tuple[str, str, list[Cell]]] = []  # (teacher, method, its cells)
            for teacher in table_teachers:
                for method in methods:
                    pts = sorted(
                        (c for c in mine if c.teacher == teacher and c.method == method),
                        key=lambda c: c.student_params or 0,
                    )
                    if not pts or (pts[0].baseline and (method, "none") in drawn):
                        continue  # FT appears in every teacher's table: draw it once
                    drawn.add((method, "none" if pts[0].baseline else teacher))
                    series.append((teacher, method, pts))
            for k, (teacher, method, pts) in enumerate(series):
                label = (
                    method
                    if len(table_teachers) == 1 or pts[0].baseline
                    else f"{method} ({short(teacher)})"
                )
                # the series of a panel share its student sizes: spread them a little around
                # each size on the log axis so that points and error bars stay apart
                nudge = 1 + 0.012 * (k - (len(series) - 1) / 2)
                ax.errorbar(
                    [c.student_params * nudge if c.student_params else math.nan for c in pts],
                    [100 * c.mean for c in pts],
                    yerr=[100 * (c.std or 0) for c in pts],
                    marker=_MARKERS[methods.index(method) % len(_MARKERS)],
                    color=colors[method],
                    capsize=3,
                    label=label,
                    linewidth=1.4,
                    linestyle="-"
                    if len(table_teachers) == 1 or pts[0].baseline
                    else style[teacher],
                )
            for teacher in table_teachers:
                ts = teachers.get((task, teacher))
                if ts is not None:
                    ax.axhline(
                        100 * ts.score,
                        color="black",
                        linestyle=style[teacher],
                        linewidth=1,
                        label=f"teacher {short(teacher)}",
                    )
            _reference_lines(ax, baselines.get(task))
            ax.set_xscale("log")
            _params_axis(ax, sorted({c.student_params for c in mine if c.student_params}))
            title = _degenerate(ax, mine, baselines.get(task), f"{task} — {family} students")
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("student parameters")
            metric = mine[0].metric if mine else ""
            ax.set_ylabel(f"test {metric} (%)")
            ax.grid(True, alpha=0.3)
    legend = _legend_outside(fig, axes.flat)
    return _save(plt, fig, path, legend)


def _save(plt: Any, fig: Any, path: Path, legend: Any = None) -> Path:
    """Lay ``fig`` out, write it to ``path`` (PNG, 110 dpi, the outside legend included) and
    free it."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = [legend] if legend is not None else None
    fig.savefig(path, dpi=110, bbox_inches="tight", bbox_extra_artists=extra)
    plt.close(fig)
    return path


def score_vs_speedup(
    cells: Sequence[Cell],
    teachers: dict[tuple[str, str], TeacherScore],
    path: Path,
    baselines: dict[str, Baselines] | None = None,
) -> Path | None:
    """Write ``score_vs_speedup.png``; ``None`` when no cell has a measured speed-up."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    baselines = baselines or {}
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
            ax.errorbar(
                [c.speedup * nudge],
                [100 * c.mean],
                yerr=[100 * (c.std or 0)],
                marker=marker,
                color=colors[c.method],
                linestyle="none",
                capsize=2,
                label=label,
            )
        for (t_task, teacher), ts in teachers.items():
            if t_task == task:
                ax.plot(
                    [1.0],
                    [100 * ts.score],
                    marker="*",
                    markersize=13,
                    color="black",
                    linestyle="none",
                    label=f"teacher {short(teacher)}",
                )
        _reference_lines(ax, baselines.get(task))
        ax.set_xscale("log")
        ax.set_xticks(spaced_ticks([c.speedup for c in mine if c.speedup is not None]))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _p=None: f"{x:.2g}x"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("inference speed-up over the teacher (batch 1)")
        ax.set_ylabel(f"test {mine[0].metric} (%)")
        shapes = ", ".join(f"{_MARKERS[k % len(_MARKERS)]}={f}" for k, f in enumerate(families))
        ax.set_title(
            _degenerate(ax, mine, baselines.get(task), f"{task} (markers: {shapes})"), fontsize=10
        )
        ax.grid(True, alpha=0.3)
    legend = _legend_outside(fig, axes.flat)
    return _save(plt, fig, path, legend)
