"""The study report as Markdown: a thin layout of :class:`kdkit.study.report_model.Report`."""

from __future__ import annotations

from pathlib import Path

from kdkit.study.report_model import Report, Section
from kdkit.study.tables import markdown_table


def _section(section: Section, out_dir: Path) -> list[str]:
    lines = [f"## {section.title}", ""] if section.title is not None else []
    if section.bullets:
        lines += [f"- {b}" for b in section.bullets] + [""]
    for table in section.tables:
        lines += [markdown_table(table.header, table.rows), ""]
    for fig in section.figures:
        lines += [f"![{fig.name}]({fig.path.relative_to(out_dir).as_posix()})", ""]
    return lines


def render_markdown(report: Report, out_dir: Path) -> str:
    """``report.md``: the sections in the model's order (figure links relative to ``out_dir``)."""
    lines = [f"# {report.title}", "", report.intro, ""]
    for section in report.sections:
        lines += _section(section, out_dir)
    return "\n".join(lines)
