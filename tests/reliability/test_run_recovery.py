"""Runs that cannot mix (the run-directory lock) and NaN recovery that works.

* a second ``kdkit run`` on a directory a run is using refuses, naming the holder, and the first
  completes intact; the lock goes with its process, however it dies;
* after a NaN stop, ``--resume ... --set training.weight_decay=0`` (or lr) reaches the restored
  optimiser; a NaN before the first checkpoint leaves the directory restartable, and the message
  gives the command.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kdkit.config import TrainingConfig
from kdkit.engine.optim import linear_warmup_factor
from kdkit.engine.runlock import LOCK_FILE, lock_run_dir
from kdkit.errors import KdkitError

from .artefact_fixtures import RUN_YAML, environment, kdkit, tiny_plugins

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def plugins():
    return tiny_plugins()


def _run_file(tmp_path: Path, out: Path, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(RUN_YAML.format(out=out))
    return path


# ------------------------------------------------------------------------ the lock


def test_a_held_lock_refuses_a_second_holder_with_its_pid(tmp_path):
    first = lock_run_dir(tmp_path / "r")
    with pytest.raises(
        KdkitError, match=rf"another kdkit run is using this directory \(pid {os.getpid()} "
    ):
        lock_run_dir(tmp_path / "r")
    first.release()
    lock_run_dir(tmp_path / "r").release()  # free again once released


def test_the_lock_dies_with_its_process(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from kdkit.engine.runlock import lock_run_dir; "
            f"lock = lock_run_dir({str(tmp_path / 'r')!r}); print('held', flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(KdkitError, match=f"pid {holder.pid} "):
            lock_run_dir(tmp_path / "r")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lock_run_dir(tmp_path / "r").release()  # kill -9 left the file, not the lock


def test_second_run_on_the_same_directory_refuses_and_the_first_completes(
    plugins, tmp_path, monkeypatch
):
    from kdkit.config import load_config
    from kdkit.engine.runner import run_once

    out = tmp_path / "run"
    run_file = _run_file(tmp_path, out)
    other = tmp_path / "other.yaml"  # another configuration aimed at the same directory
    other.write_text(RUN_YAML.format(out=out).replace("seed: 3", "seed: 9"))
    monkeypatch.setenv("KDKIT_TEST_STEP_SLEEP", "1.0")  # the first run lasts a few seconds
    monkeypatch.setenv("KDKIT_CACHE", str(tmp_path / "cache"))
    resolved = load_config(str(run_file), plugins.registry, [])
    outcome: dict = {}

    def first() -> None:
        try:
            outcome["summary"] = run_once(resolved, plugins, progress=False)
        except BaseException as exc:  # reported by the assertion below
            outcome["error"] = exc

    thread = threading.Thread(target=first)
    thread.start()
    deadline = time.time() + 600
    while time.time() < deadline and not (out / "metrics.jsonl").exists():
        time.sleep(0.05)  # the first run is training
    with environment(tmp_path / "cache", plugins):
        second = kdkit("run", str(other), "--quiet")
    thread.join()
    assert "Traceback" not in second.text and second.code == 2, second.text
    assert f"another kdkit run is using this directory (pid {os.getpid()}" in second.err
    assert "error" not in outcome, outcome.get("error")
    assert outcome["summary"]["status"] == "finished" and outcome["summary"]["seed"] == 3
    assert "seed: 3" in (out / "config.yaml").read_text()  # the first run's files, intact
    steps = [
        r["step"]
        for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
        if r["event"] == "step"
    ]
    assert steps == list(range(1, 9))
    assert (out / LOCK_FILE).exists()
    # finished: the next run is refused for holding a run, not for the lock
    with environment(tmp_path / "cache", plugins):
        third = kdkit("run", str(other), "--quiet")
    assert third.code == 2 and "already holds a run" in third.err


# ------------------------------------------------------------------------ NaN recovery


def test_resume_applies_changed_optimizer_settings(plugins, tmp_path, monkeypatch):
    from kdkit.engine.checkpoint import load_state

    monkeypatch.setenv("KDKIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    run_file = _run_file(tmp_path, out)
    nan = ["--set", "method={name: nan-at, step: 6}", "--set", "training.weight_decay=0.05"]
    with environment(tmp_path / "cache", plugins):
        stopped = kdkit("run", str(run_file), "--quiet", *nan)
        assert stopped.code == 2 and "'ce' is nan at step 6" in stopped.err, stopped.text
        assert f"kdkit run --resume {out} --set training.lr=0.0003" in stopped.err
        assert "step 4" in stopped.err  # the last good checkpoint
        state = load_state(str(out / "checkpoints" / "last"))
        assert state["optimizer"]["param_groups"][0]["weight_decay"] == 0.05
        resumed = kdkit(
            "run", "--resume", str(out), "--quiet",
            "--set", "training.weight_decay=0", "--set", "training.lr=0.001",
            "--set", "method={name: nan-at, step: 1000}",
        )  # fmt: skip
    assert resumed.code == 0, resumed.text
    assert "weight_decay: 0.05 -> 0.0" in resumed.err and "base lr: 0.003 -> 0.001" in resumed.err
    final = load_state(str(out / "checkpoints" / "last"))
    groups = final["optimizer"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [0.0, 0.0]
    assert [g["initial_lr"] for g in groups] == [0.001, 0.001]
    assert final["schedule"]["base_lrs"] == [0.001, 0.001]
    steps = [
        r["step"]
        for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
        if r["event"] == "step"
    ]
    assert steps == list(range(1, 9))  # steps 5.. recorded once, after the resume
    lrs = {
        r["step"]: r["lr"]
        for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
        if r["event"] == "step"
    }
    # the schedule goes on from the new base: step 5 runs at the factor of schedule step 4
    warmup = math.ceil(TrainingConfig().warmup_ratio * 8)
    assert lrs[5] == pytest.approx(0.001 * linear_warmup_factor(4, 8, warmup))
    assert lrs[4] == pytest.approx(0.003 * linear_warmup_factor(3, 8, warmup))  # before: old lr


def test_unchanged_resume_keeps_the_optimizer_exactly(plugins, tmp_path, monkeypatch):
    """With no change, re-applying the configuration's settings is the identity."""
    from kdkit.engine.checkpoint import load_state

    monkeypatch.setenv("KDKIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    with environment(tmp_path / "cache", plugins):
        stopped = kdkit(
            "run",
            str(_run_file(tmp_path, out)),
            "--quiet",
            "--set",
            "method={name: nan-at, step: 7}",
        )
        assert stopped.code == 2
        saved = load_state(str(out / "checkpoints" / "last"))
        resumed = kdkit(
            "run", "--resume", str(out), "--quiet", "--set", "method={name: nan-at, step: 99}"
        )
    assert resumed.code == 0, resumed.text
    assert "changed settings" not in resumed.err
    assert saved["schedule"]["base_lrs"] == [0.003, 0.003]


def test_nan_before_the_first_checkpoint_leaves_a_restartable_directory(
    plugins, tmp_path, monkeypatch
):
    monkeypatch.setenv("KDKIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    run_file = _run_file(tmp_path, out)
    with environment(tmp_path / "cache", plugins):
        stopped = kdkit("run", str(run_file), "--quiet", "--set", "method={name: nan-at, step: 1}")
        assert stopped.code == 2 and "Traceback" not in stopped.text
        assert "no checkpoint was written" in stopped.err
        assert "run the same `kdkit run` command again" in stopped.err
        assert "--set training.lr=0.0003" in stopped.err
        assert json.loads((out / "summary.json").read_text())["status"] == "stopped"
        resume = kdkit("run", "--resume", str(out), "--quiet")
        assert resume.code == 2 and "no checkpoint to resume from" in resume.err
        assert "without --resume" in resume.err
        again = kdkit("run", str(run_file), "--quiet", "--set", "method={name: nan-at, step: 99}")
    assert again.code == 0, again.text
    assert json.loads((out / "summary.json").read_text())["status"] == "finished"
    aside = out / "stopped-attempt"
    assert json.loads((aside / "summary.json").read_text())["status"] == "stopped"
    steps = [
        r["step"]
        for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
        if r["event"] == "step"
    ]
    assert steps == list(range(1, 9))  # the new attempt's metrics only


def test_metrics_of_a_resumed_run_hold_each_step_once(tmp_path):
    from kdkit.api import RunInfo
    from kdkit.plugins.reporters.jsonl import JsonlOptions, JsonlReporter

    path = tmp_path / "metrics.jsonl"
    lines = [{"event": "step", "step": s} for s in range(1, 8)]
    lines.insert(4, {"event": "eval", "step": 4, "split": "validation"})
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"event": "step", "st')
    rep = JsonlReporter(JsonlOptions())
    rep.start(RunInfo(str(tmp_path), {}, 8, resumed_step=4))
    rep.step(RunInfo(str(tmp_path), {}), 5, {"loss": 1.0})
    got = [json.loads(x) for x in path.read_text().splitlines()]
    assert [(r["event"], r["step"]) for r in got] == [
        ("step", 1), ("step", 2), ("step", 3), ("step", 4), ("eval", 4), ("step", 5)
    ]  # fmt: skip
