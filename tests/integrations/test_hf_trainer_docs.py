"""docs/hf-trainer.md: the "after" script runs as written and distils with kdkit's KD loss, and it
differs from the "before" Trainer script by a few lines only."""

from __future__ import annotations

import ast
import difflib
import re
from pathlib import Path

import pytest

pytest.importorskip("accelerate")

DOC = Path(__file__).resolve().parents[2] / "docs" / "hf-trainer.md"


def _block(after_heading: str) -> str:
    text = DOC.read_text()
    section = text[text.index(after_heading) :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_after_script_runs_and_logs_the_kd_terms(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(_block("## After"), str(DOC), "exec"), scope)
    trainer = scope["trainer"]
    assert trainer.state.global_step == 4
    first = trainer.state.log_history[0]
    assert first["loss"] == pytest.approx(first["kd/kd"] + first["kd/ce"], rel=1e-3)
    assert "kd/kd" in capsys.readouterr().out


def _statements(code: str) -> list[str]:
    """The script's top-level statements, each as one normalised line (ast.unparse), so the
    comparison counts statements, not how the formatter wraps them."""
    return [ast.unparse(node) for node in ast.parse(code).body]


def test_before_and_after_differ_by_a_few_statements():
    before, after = _statements(_block("## Before")), _statements(_block("## After"))
    changed = [
        line
        for line in difflib.unified_diff(before, after, lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    added = [line for line in changed if line.startswith("+")]
    # the transformers import (no Trainer), the kdkit import, the teacher, the DistillationTrainer
    # call and one print of its kd terms
    assert len(added) <= 5, changed
    assert any("DistillationTrainer(model=student, teacher=teacher" in line for line in added)
