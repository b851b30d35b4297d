"""Running a study end to end on the tiny task: skip, interrupt and resume, shards, failures."""

from __future__ import annotations

import json

import pytest

from kdkit.study.grid import load_grid
from kdkit.study.resolve import plan
from kdkit.study.results import run_status
from kdkit.study.runner import engine_executor, run_study
from kdkit.study.shard import parse_shard

GRID = """
name: tiny-study
output_dir: {out}
base:
  task: tiny
  training: {{epochs: 2, batch_size: 8, lr: 0.003, max_length: 64, device: cpu,
             save_every: 2, num_threads: 1}}
  reporters: [jsonl]
grid:
  teacher: [tiny-teacher]
  student: [{{name: gru, size: 0.6M, vocab_size: 300, hidden_size: 16, label: gru-tiny}}]
  method: [ft, {{name: kd, temperature: 2}}]
  seed: [0, 1]
"""


def _study(write_grid, tmp_path, plugins, name="study"):
    grid = load_grid(write_grid(GRID.format(out=tmp_path / name), name=f"{name}.yaml"))
    return grid, plan(grid, plugins.registry)


def _test_metric(run) -> float:
    return json.loads((run.run_dir / "summary.json").read_text())["test"]["accuracy"]


def test_study_runs_skips_and_resumes(write_grid, tmp_path, study_plugins, interrupter):
    grid, runs = _study(write_grid, tmp_path, study_plugins)
    assert len(runs) == 4  # ft x 2 seeds (no teacher) + kd x 2 seeds
    execute = engine_executor(study_plugins, progress=False)
    log: list[str] = []

    # a Ctrl-C at step 5 of the first run stops the study; the run keeps its checkpoint
    interrupter.at_step = 5
    with pytest.raises(KeyboardInterrupt):
        run_study(grid, runs, execute, log=log.append)
    first = next(r for r in runs if r.run_id == "tiny__none__gru-tiny__ft__seed0")
    assert run_status(first.run_dir) == "partial"
    assert json.loads((first.run_dir / "study_point.json").read_text())["labels"]["method"] == "ft"

    outcome = run_study(grid, runs, execute, log=log.append)
    assert outcome.resumed == [first.run_id]
    assert len(outcome.ran) == 3 and outcome.ok
    assert all(run_status(r.run_dir) == "complete" for r in runs)
    manifest = json.loads((grid.output_dir / "study.json").read_text())
    assert manifest["runs"] == sorted(r.run_id for r in runs)

    # a second call skips everything
    again = run_study(grid, runs, execute, log=log.append)
    assert sorted(again.skipped) == sorted(r.run_id for r in runs) and not again.ran

    # the interrupted-and-resumed run ends exactly where an uninterrupted one does
    grid2, runs2 = _study(write_grid, tmp_path, study_plugins, name="fresh")
    only = [r for r in runs2 if r.run_id == first.run_id]
    assert run_study(grid2, only, execute, log=log.append).ran == [first.run_id]
    a = json.loads((first.run_dir / "summary.json").read_text())
    b = json.loads((only[0].run_dir / "summary.json").read_text())
    assert a["steps"] == b["steps"] == 8
    assert a["test"] == b["test"] and a["best_validation"] == b["best_validation"]
    # KD runs recorded the teacher's own test score (the report's 100 % line)
    kd = next(r for r in runs if "__kd__" in r.run_id)
    assert json.loads((kd.run_dir / "summary.json").read_text())["teacher"]["test"]["accuracy"] >= 0


def test_shards_partition_the_runs_and_failures_are_recorded(write_grid, tmp_path, study_plugins):
    grid, runs = _study(write_grid, tmp_path, study_plugins)
    seen: list[str] = []

    def fake(run, resume):  # an executor that "runs" by writing a summary, failing on kd seed 1
        if run.run_id.endswith("kd__seed1"):
            raise RuntimeError("boom")
        seen.append(run.run_id)
        (run.run_dir / "summary.json").write_text("{}")

    outs = [
        run_study(grid, runs, fake, shard=parse_shard(f"{i}/3"), log=lambda _m: None)
        for i in (1, 2, 3)
    ]
    assert len(seen) == len(set(seen)) == 3  # every other run exactly once
    failed = [k for o in outs for k in o.failed]
    assert failed == ["tiny__tiny-teacher__gru-tiny__kd__seed1"]
    bad = next(r for r in runs if r.run_id == failed[0])
    assert run_status(bad.run_dir) == "failed"
    assert "boom" in json.loads((bad.run_dir / "study_error.json").read_text())["error"]
    # the next call retries only the failed run (from a clean directory)
    retry = run_study(
        grid,
        runs,
        lambda r, _res: (r.run_dir / "summary.json").write_text("{}"),
        log=lambda _m: None,
    )
    assert retry.ran == failed and not (bad.run_dir / "study_error.json").exists()


def test_max_runs_and_fail_fast(write_grid, tmp_path, study_plugins):
    grid, runs = _study(write_grid, tmp_path, study_plugins)

    def fail(run, resume):
        raise RuntimeError("no")

    out = run_study(grid, runs, fail, fail_fast=True, log=lambda _m: None)
    assert len(out.failed) == 1
    ok = run_study(
        grid,
        runs,
        lambda r, _res: (r.run_dir / "summary.json").write_text("{}"),
        max_runs=2,
        log=lambda _m: None,
    )
    # seed-major order: both seed-0 runs first
    assert sorted(ok.ran) == [
        "tiny__none__gru-tiny__ft__seed0",
        "tiny__tiny-teacher__gru-tiny__kd__seed0",
    ]


def test_efficiency_and_report_of_a_real_tiny_study(write_grid, tmp_path, study_plugins):
    from kdkit.study.efficiency import measure_study
    from kdkit.study.report import write_report
    from kdkit.testing.tiny import TinyTeacher

    body = GRID.replace("seed: [0, 1]", "seed: [0]").replace("epochs: 2", "epochs: 1")
    grid = load_grid(write_grid(body.format(out=tmp_path / "eff")))
    runs = plan(grid, study_plugins.registry)
    assert run_study(
        grid, runs, engine_executor(study_plugins, progress=False), log=lambda _m: None
    ).ok
    path = measure_study(
        grid.output_dir, runs, repeats=3, batch=4, train_steps=2, log=lambda _m: None
    )
    eff = json.loads(path.read_text())
    kinds = {(m["kind"], m["label"]): m for m in eff["models"]}
    teacher = kinds[("teacher", "tiny-teacher")]
    student = kinds[("student", "gru-tiny")]
    assert teacher["parameters"] == TinyTeacher().info.num_parameters
    summary = json.loads((runs[0].run_dir / "summary.json").read_text())
    assert student["parameters"] == summary["student"]["parameters"]
    for m in (teacher, student):
        assert m["flops_per_example"] > 0 and m["latency_ms"] > 0 and m["throughput"] > 0
        assert m["throughput_batch"] == 4
    timing = {(t["method"], t["signal"]): t for t in eff["training"]}
    assert set(timing) == {("ft", "none"), ("kd", "cache"), ("kd", "live")}
    assert timing[("ft", "none")]["ratio_to_ft"] == 1.0
    assert timing[("kd", "live")]["steps_per_epoch"] == 4  # 32 rows, batch 8
    out = write_report(grid.output_dir, log=lambda _m: None)
    md = (out / "report.md").read_text()
    speedup = teacher["latency_ms"] / student["latency_ms"]
    assert f"{speedup:.1f}x" in md and "Training time per epoch" in md
