"""The default job's orchestration (teacher -> FT -> KD -> comparison) on the tiny task."""

from __future__ import annotations

import json

from kdkit.engine.default_job import new_root, run_default_job

from .conftest import tiny_config


def test_default_job_compares_teacher_ft_and_kd(plugins, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KDKIT_CACHE", str(tmp_path / "cache"))
    resolved = tiny_config(plugins, tmp_path / "ignored")
    result = run_default_job(resolved, plugins, output=str(tmp_path / "job"), progress=False)
    rows = result["rows"]
    assert [r["model"].split(" (")[0] for r in rows] == ["teacher", "FT student", "KD student"]
    ft = json.loads((tmp_path / "job" / "ft" / "summary.json").read_text())
    kd = json.loads((tmp_path / "job" / "kd" / "summary.json").read_text())
    assert ft["method"] == "ft" and kd["method"] == "kd" and kd["teacher_signal"] == "cache"
    assert ft["student"] == kd["student"]  # same architecture and size
    assert ft["steps"] == kd["steps"]
    assert result["kd_minus_ft"] == kd["test"]["accuracy"] - ft["test"]["accuracy"]
    assert rows[2]["kept"] == 100 * kd["test"]["accuracy"] / kd["teacher"]["test"]["accuracy"]
    assert rows[1]["speedup"] == rows[0]["latency_ms"] / rows[1]["latency_ms"] > 0
    out = capsys.readouterr().out
    assert "KD student" in out and "% of teacher" in out
    assert (tmp_path / "job" / "comparison.txt").read_text().startswith("model")
    # a second job never reuses (or overwrites) the first one's directory
    assert new_root(tmp_path / "job") == tmp_path / "job-2"
