"""docs/python-api.md runs as written: its Python blocks, in order, on the tiny task.

The first block defines ``run`` (the real offline example); it is validated as written, then
replaced by the same sections on the tiny task so that training takes seconds. Every other block
runs verbatim, and the printed error message is the one the page shows.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import kdkit
from kdkit import python_api

from .conftest import TINY

DOC = Path(__file__).resolve().parents[2] / "docs" / "python-api.md"


def blocks(text: str) -> list[tuple[str, str]]:
    """``(language, code)`` of every fenced block, in order."""
    return [(m.group(1), m.group(2)) for m in re.finditer(r"```(\w*)\n(.*?)```", text, re.S)]


def test_the_python_api_page_runs_as_written(plugins, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KDKIT_CACHE", str(tmp_path / "cache"))
    for name in ("distill", "configure"):  # the tiny task comes from a test plugin
        monkeypatch.setattr(
            python_api, name, functools.partial(getattr(python_api, name), plugins=plugins)
        )
    found = blocks(DOC.read_text(encoding="utf-8"))
    code = [c for lang, c in found if lang == "python"]
    assert len(code) >= 5 and "run = dict(" in code[0]
    namespace: dict = {}
    exec(compile(code[0], f"{DOC.name}[python block 1]", "exec"), namespace)
    real = kdkit.configure(**namespace["run"])  # the page's own run validates
    assert real.components["task"].component.name == "exception"
    assert real.run.training.epochs == 12
    namespace["run"] = dict(TINY, method={"name": "kd", "temperature": 4, "alpha": 0.5})
    printed: list[str] = []
    for i, block in enumerate(code[1:], start=2):
        capsys.readouterr()
        exec(compile(block, f"{DOC.name}[python block {i}]", "exec"), namespace)
        printed.append(capsys.readouterr().out)
    result = namespace["result"]
    assert result.run_dir == Path("runs/notebook-kd")
    assert (tmp_path / "runs" / "notebook-kd" / "summary.json").is_file()
    assert result.model_path == result.run_dir / "best" / "model"
    assert set(result.metrics) == {"accuracy"} and 0.0 <= result.metrics["accuracy"] <= 1.0
    assert result.teacher_metrics is not None
    model = namespace["model"]
    assert model.labels == ["raises", "loops", "plain"]  # the tiny task's real label names
    assert namespace["probabilities"].shape == (2, 3)
    assert str(result).startswith("  task")
    # the error block prints exactly the message the page shows after it
    error_block = next(i for i, b in enumerate(code) if "except ConfigError" in b)
    shown = next(c for lang, c in found if lang == "text" and "problems in the arguments" in c)
    assert printed[error_block - 1] == shown
