"""The default job's orchestration (teacher -> FT -> KD -> comparison) on the tiny task."""

from __future__ import annotations

import json

from kdkit.engine.default_job import new_root, run_default_job

from .conftest import tiny_config


def test_default_job_compares_teacher_ft_and_kd(plugins, tmp_path, monkeypatch, capsys):
    from kdkit.baselines import runs

    from .test_run_baselines import TINY

    monkeypatch.setenv("KDKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(runs, "RUN_OPTIONS", TINY)  # tunable on the tiny task's 8 rows
    resolved = tiny_config(plugins, tmp_path / "ignored")
    result = run_default_job(resolved, plugins, output=str(tmp_path / "job"), progress=False)
    rows = result["rows"]
    base = result["baselines"]
    # the best constant is listed only where its label (chosen on validation) is not the majority
    constant = base["tuned"]["constant"]["label"]
    always = [f"baseline: always '{constant}'"] if constant != base["majority_label"] else []
    assert [r["model"].split(" (")[0] for r in rows] == [
        "teacher",
        "FT student",
        "KD student",
        "baseline: majority class",
        *always,
        "baseline: stratified random",
        "baseline: TF-IDF + logistic regression",
    ]
    assert rows[3]["accuracy"] == base["splits"]["test"]["scores"]["majority"]
    if always:
        assert rows[4]["accuracy"] == base["splits"]["test"]["scores"]["constant"]
    assert rows[-1]["ci"] == base["splits"]["test"]["ci"]["tfidf_lr"]
    # computed in the FT run, read from the cache by the KD run
    assert result["baselines_seconds"]["ft"] is not None and base["from_cache"] is True
    expected_flags = runs.flags(
        runs.from_summary(base),
        rows[0]["accuracy"],
        {"FT student": rows[1]["accuracy"], "KD student": rows[2]["accuracy"]},
    )
    assert result["flags"] == expected_flags
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


def test_default_job_with_another_method_names_everything_after_it(
    plugins, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("KDKIT_CACHE", str(tmp_path / "cache"))
    resolved = tiny_config(plugins, tmp_path / "ignored", "method.name=dist")
    result = run_default_job(resolved, plugins, output=str(tmp_path / "job"), progress=False)
    assert [r["model"].split(" (")[0] for r in result["rows"]] == [
        "teacher",
        "FT student",
        "DIST student",
    ]
    assert not (tmp_path / "job" / "kd").exists()
    dist = json.loads((tmp_path / "job" / "dist" / "summary.json").read_text())
    ft = json.loads((tmp_path / "job" / "ft" / "summary.json").read_text())
    assert dist["method"] == "dist" and ft["method"] == "ft"
    assert result["method"] == "dist" and set(result["runs"]) == {"ft", "dist"}
    gain = 100 * (dist["test"]["accuracy"] - ft["test"]["accuracy"])
    if round(gain, 1) > 0:
        expected = f"DIST is {abs(gain):.1f} points above FT on test accuracy"
    elif round(gain, 1) < 0:
        expected = f"DIST is {abs(gain):.1f} points below FT on test accuracy"
    else:
        expected = "DIST ties FT on test accuracy (0.0 points apart)"
    assert result["verdict"].startswith(expected + ";")
    out = capsys.readouterr().out
    assert expected in out
    # the tiny task's 8 validation rows are too few to tune a baseline on: one line says so
    note = result["flags"][-1]
    assert note.startswith("baselines unavailable: the validation split has 8 rows") and note in out
    assert not any(r["model"].startswith("baseline") for r in result["rows"])


def test_verdict_states_the_comparison_plainly():
    from kdkit.engine.default_job import verdict_line

    assert verdict_line("RKD", -0.021, "top1") == "RKD is 2.1 points below FT on test top1"
    assert verdict_line("KD", 0.030, "top1") == "KD is 3.0 points above FT on test top1"
    assert verdict_line("KD", 0.0004, "top1") == "KD ties FT on test top1 (0.0 points apart)"


def test_default_job_refuses_ft_against_ft(plugins, tmp_path):
    import pytest

    from kdkit.errors import KdkitError

    with pytest.raises(KdkitError, match="nothing to compare"):
        run_default_job(
            tiny_config(plugins, tmp_path / "x", "method=ft"),
            plugins,
            output=str(tmp_path / "job"),
            progress=False,
        )
    assert not (tmp_path / "job").exists()


def test_default_job_root_honours_set_output_dir(tmp_path):
    import pytest

    from kdkit.cli.run import default_job_root
    from kdkit.errors import KdkitError

    assert default_job_root(None, ["method.name=rkd"], "runs/x") is None  # runs/default
    assert default_job_root(None, ["output_dir=runs/mine"], "runs/mine") == "runs/mine"
    assert default_job_root("out", [], "runs/x") == "out"
    with pytest.raises(KdkitError, match="disagree"):
        default_job_root("out", ["output_dir=runs/mine"], "runs/mine")


def test_kdkit_run_set_output_dir_and_method_reach_the_default_job(monkeypatch, tmp_path):
    """``kdkit run --set method.name=X --set output_dir=D`` (the embedded default run) hands
    the job method X and root D; the job itself is stubbed (the real one takes minutes)."""
    import kdkit.engine.default_job as default_job
    from kdkit.cli import main

    seen = {}

    def fake_job(resolved, plugins, *, output=None, progress=True):
        seen["method"] = resolved.components["method"].component.name
        seen["output"] = output
        return {}

    monkeypatch.setattr(default_job, "run_default_job", fake_job)
    target = tmp_path / "jobs" / "{method}"
    code = main(["run", "--set", "method.name=rkd", "--set", f"output_dir={target}", "--quiet"])
    assert code == 0
    assert seen == {"method": "rkd", "output": str(tmp_path / "jobs" / "rkd")}
