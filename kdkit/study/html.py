"""The report as one self-contained HTML page (inline styles, figures as data URIs)."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .55em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
tr:nth-child(even) td{background:#fafafa}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}
.note{color:#555;font-size:.9em}
"""


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in rows)  # fmt: skip
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def render_html(rep: dict[str, Any], out_dir: Path) -> str:
    """The page: the same sections as ``report.md``, with the figures embedded."""
    from kdkit.study.report import _notes, efficiency_tables, shapes
    from kdkit.study.tables import (
        BEST_COLUMNS,
        TABLE_COLUMNS,
        best_method_rows,
        fmt_params,
        groups,
        table_rows,
    )

    title = f"Study report: {rep['name']}"
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p class='note'>{sum(r.status == 'finished' for r in rep['records'])} finished runs. Scores: headline test metric "
             "of the best-on-validation student, %, mean ± sample std over seeds. Retention: % of "
             "the teacher's own score. Gain: points over FT with the same student. Speed-up: "
             "teacher / student latency at batch 1, measured in one process.</p>"]  # fmt: skip
    found = shapes(rep["cells"])
    if found:
        parts.append(
            "<h2>Shapes</h2><ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in found) + "</ul>"
        )
    best = best_method_rows(rep["cells"])
    if best:
        parts.append("<h2>FT and the best KD method per student</h2>" + _table(BEST_COLUMNS, best))
    for (task, teacher), group in groups(rep["cells"]):
        ts = rep["teachers"].get((task, teacher))
        head = f"{task} — teacher {teacher}"
        if ts is not None:
            head += f" (test {ts.metric} {100 * ts.score:.1f}, {fmt_params(ts.parameters)} params)"
        parts.append(f"<h2>{html.escape(head)}</h2>" + _table(TABLE_COLUMNS, table_rows(group)))
    for name, path in rep["figures"].items():
        parts.append(f"<h2>{html.escape(name.replace('_', ' '))}</h2>" + _image(path, name))
    for t, header, rows in efficiency_tables(rep["efficiency"]):
        parts.append(f"<h2>{html.escape(t)}</h2>" + _table(header, rows))
    notes = _notes(rep["efficiency"])
    if notes:
        parts.append(
            "<ul class='note'>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>"
        )
    missing = [f"{r.run_id}: {r.status}" for r in rep["unfinished"]]
    missing += [f"{m}: {rep['incomplete'].get(m, 'not found')}" for m in rep["missing"]]
    if missing:
        parts.append("<h2>Not in the tables</h2><ul>"
                     + "".join(f"<li>{html.escape(m)}</li>" for m in missing) + "</ul>")  # fmt: skip
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")  # fmt: skip
