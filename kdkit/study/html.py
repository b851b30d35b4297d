"""The study report as one self-contained HTML page (inline styles, figures as data URIs): a thin
layout of :class:`kdkit.study.report_model.Report`, like the Markdown page."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

from kdkit.study.report_model import Report, Section

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
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _section(section: Section) -> str:
    parts = [f"<h2>{html.escape(section.title)}</h2>"] if section.title is not None else []
    if section.bullets:
        cls = " class='note'" if section.note else ""
        parts.append(
            f"<ul{cls}>" + "".join(f"<li>{html.escape(b)}</li>" for b in section.bullets) + "</ul>"
        )
    parts += [_table(t.header, t.rows) for t in section.tables]
    parts += [_image(f.path, f.name) for f in section.figures]
    return "".join(parts)


def render_html(report: Report) -> str:
    """``report.html``: the sections in the model's order, the figures embedded (data URIs)."""
    parts = [
        f"<h1>{html.escape(report.title)}</h1>",
        f"<p class='note'>{html.escape(report.intro)}</p>",
    ]
    parts += [_section(s) for s in report.sections]
    return (
        f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(report.title)}</title><style>{_STYLE}</style></head><body>"
        + "\n".join(parts)
        + "</body></html>\n"
    )
