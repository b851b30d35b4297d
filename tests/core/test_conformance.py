"""Every registered reporter and bench op passes kdkit.testing's checks (parametrized over the
registry, so a new one is tested the moment it is registered)."""

from __future__ import annotations

import json
from importlib import metadata

import pytest

from kdkit.discovery import load_plugins
from kdkit.testing import check_bench_op, check_hookimpls, check_reporter

PLUGINS = load_plugins()
REPORTERS = PLUGINS.registry.names("reporter")
BENCH_OPS = PLUGINS.registry.names("bench_op")
#: Reporters whose package is an optional extra -> the module it provides (skipped without it).
OPTIONAL_EXTRAS = {"tensorboard": "tensorboard", "wandb": "wandb"}


def _entry_point_values(prefix: str) -> set[str]:
    dist = metadata.distribution("kdkit")
    return {
        ep.name for ep in dist.entry_points if ep.group == "kdkit" and ep.value.startswith(prefix)
    }


def test_the_parametrization_covers_every_reporter_and_bench_op_plugin():
    origins = {PLUGINS.registry.get("reporter", n).origin.plugin for n in REPORTERS}
    assert _entry_point_values("kdkit.plugins.reporters.") <= origins
    assert {"console", "jsonl"} <= set(REPORTERS)
    assert {PLUGINS.registry.get("bench_op", n).origin.plugin for n in BENCH_OPS} >= {"kernels"}
    assert len(BENCH_OPS) >= 5


@pytest.mark.parametrize("name", REPORTERS)
def test_reporter_conformance(name, tmp_path):
    if name in OPTIONAL_EXTRAS:
        pytest.importorskip(OPTIONAL_EXTRAS[name])
    reporter = check_reporter(name, run_dir=tmp_path / "run")
    component = PLUGINS.registry.get("reporter", name)
    assert component.description
    plugin = PLUGINS.pm.get_plugin(component.origin.plugin)
    assert "register_reporters" in check_hookimpls(plugin)
    assert type(reporter).__module__ == component.factory.__module__


def test_jsonl_reporter_writes_every_event(tmp_path):
    check_reporter("jsonl", {"every": 2}, run_dir=tmp_path / "run")
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["event"], r.get("step"), r.get("split")) for r in lines] == [
        ("step", 2, None),
        ("eval", 2, "validation"),
        ("eval", 2, "test"),
        ("end", None, None),
    ]
    assert lines[0]["loss"] == 0.5 and lines[-1]["steps"] == 2 and "table" not in lines[-1]


def test_console_reporter_prints_evaluations_and_the_table(tmp_path, capsys):
    check_reporter("console", {"stream": "stdout"}, run_dir=tmp_path / "run")
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == [
        "[step 2] validation: accuracy=0.5000  f1=0.2500",
        "[step 2] test: accuracy=0.7500  f1=0.5000",
    ]
    assert out[2:] == ["| a |", "|---|", "| 1 |"]


@pytest.mark.parametrize("name", BENCH_OPS)
def test_bench_op_conformance(name):
    report = check_bench_op(name)
    assert "reference" in report.checked  # the eager reference always runs on CPU
    assert set(report.checked) | set(report.skipped) == {
        p.name for p in PLUGINS.registry.get("bench_op", name).build(None, None).providers
    }
