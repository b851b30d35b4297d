"""The engine: schedule, clipping, determinism, resume after a kill, NaN guard, reload."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from kdkit.api import Needs
from kdkit.engine.optim import clip_gradients, linear_warmup_factor
from kdkit.engine.runner import run_once
from kdkit.errors import KdkitError, NonFiniteLossError

from .conftest import tiny_config

HERE = Path(__file__).parent


def test_linear_warmup_schedule_hand_values():
    # 10 steps, 2 warm-up: 1/2, 2/2, then (10-2)/8 .. (10-9)/8
    got = [linear_warmup_factor(s, 10, 2) for s in range(10)]
    assert got == [0.5, 1.0, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8]


def test_clipping_really_clips_even_given_a_generator():
    a = torch.nn.Parameter(torch.zeros(3))
    b = torch.nn.Parameter(torch.zeros(4))
    a.grad = torch.tensor([3.0, 0.0, 0.0])
    b.grad = torch.tensor([0.0, 4.0, 0.0, 0.0])  # global norm 5
    before = clip_gradients((p for p in [a, b]), max_norm=1.0)  # a generator, as in the study
    assert before == pytest.approx(5.0)
    after = torch.linalg.vector_norm(torch.cat([a.grad, b.grad]))
    assert float(after) == pytest.approx(1.0, rel=1e-5)
    torch.testing.assert_close(a.grad, torch.tensor([0.6, 0.0, 0.0]))
    assert clip_gradients([a, b], None) == pytest.approx(1.0, rel=1e-5)  # None: measured only


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_same_seed_gives_identical_runs_and_cache_is_reused(plugins, tmp_path, monkeypatch):
    monkeypatch.setenv("KDKIT_CACHE", str(tmp_path / "cache"))
    first = run_once(tiny_config(plugins, tmp_path / "a"), plugins, progress=False)
    second = run_once(tiny_config(plugins, tmp_path / "b"), plugins, progress=False)
    assert first["teacher_signal"] == "cache"
    assert first["test"] == second["test"] and first["best_validation"] == second["best_validation"]
    losses = lambda d: [r["loss"] for r in _jsonl(d / "metrics.jsonl") if r["event"] == "step"]  # noqa: E731
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    assert len(losses(tmp_path / "a")) == first["steps"] == 8  # 32 rows / 8 x 2 epochs
    entries = list((tmp_path / "cache" / "teacher-outputs").iterdir())
    assert len(entries) == 2  # train (logits) and test (teacher's own score), shared by both runs
    # a run directory is never overwritten
    with pytest.raises(KdkitError, match="already holds a run"):
        run_once(tiny_config(plugins, tmp_path / "a"), plugins, progress=False)


def test_saved_student_reloads_with_the_same_test_predictions(plugins, tmp_path, monkeypatch):
    from kdkit.engine.persist import load_student
    from kdkit.testing.tiny import TinyTask

    monkeypatch.setenv("KDKIT_CACHE", str(tmp_path / "cache"))
    summary = run_once(tiny_config(plugins, tmp_path / "r", "method=ft"), plugins, progress=False)
    assert summary["teacher_signal"] is None
    student = load_student(tmp_path / "r").eval()  # a run dir resolves to best/model
    texts = TinyTask().load()["test"]["text"]
    with torch.no_grad():
        probs = torch.softmax(student(student.encode(list(texts), 64), Needs()).logits, -1)
    saved = _jsonl(tmp_path / "r" / "predictions-test.jsonl")
    labels = TinyTask.labels
    assert [labels[int(i)] for i in probs.argmax(-1)] == [r["label"] for r in saved]
    assert [round(float(p), 6) for p in probs.max(-1).values] == pytest.approx(
        [r["probability"] for r in saved], abs=1e-5
    )


def test_nan_loss_stops_with_the_term_and_step_and_keeps_last_good_checkpoint(
    plugins, tmp_path, monkeypatch
):
    monkeypatch.setenv("KDKIT_CACHE", str(tmp_path / "cache"))
    cfg = tiny_config(
        plugins, tmp_path / "n", "method={name: nan-at, step: 6}", "training.save_every=2"
    )
    with pytest.raises(NonFiniteLossError, match=r"'ce' is nan at step 6") as err:
        run_once(cfg, plugins, progress=False)
    assert "checkpoints/last" in err.value.fix
    state = json.loads((tmp_path / "n" / "checkpoints" / "last" / "state.json").read_text())
    assert '"step", 4' in json.dumps(state).replace("[", "").replace("]", "")  # last good: step 4
    assert json.loads((tmp_path / "n" / "summary.json").read_text())["status"] == "stopped"


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_final_metrics(tmp_path):
    env = {**os.environ, "KDKIT_CACHE": str(tmp_path / "cache")}
    script = str(HERE / "run_tiny.py")
    common = ["training.epochs=3", "training.save_every=2"]
    subprocess.run([sys.executable, script, str(tmp_path / "full"), *common], env=env, check=True)
    victim = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, script, str(victim), *common], env={**env, "KDKIT_TEST_STEP_SLEEP": "0.4"}
    )
    state = victim / "checkpoints" / "last" / "state.json"
    deadline = time.time() + 120
    while time.time() < deadline and not state.exists():
        time.sleep(0.1)
    time.sleep(0.5)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (victim / "summary.json").exists()
    subprocess.run([sys.executable, script, str(victim), "--resume", *common], env=env, check=True)
    full = json.loads((tmp_path / "full" / "summary.json").read_text())
    resumed = json.loads((victim / "summary.json").read_text())
    assert resumed["steps"] == full["steps"] == 12
    assert resumed["test"] == full["test"] and resumed["best_validation"] == full["best_validation"]
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "full" / "checkpoints" / "last" / "student.safetensors"))
    b = load_file(str(victim / "checkpoints" / "last" / "student.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_early_stopping_stops_after_patience_evaluations_without_gain(
    plugins, tmp_path, monkeypatch
):
    monkeypatch.setenv("KDKIT_CACHE", str(tmp_path / "cache"))
    # lr so small that validation accuracy never moves: the first evaluation stays the best
    cfg = tiny_config(
        plugins,
        tmp_path / "e",
        "method=ft",
        "training.lr=1e-12",
        "training.eval_every=1",
        "training.early_stopping_patience=2",
    )
    summary = run_once(cfg, plugins, progress=False)
    assert summary["stopped_early"] is True
    assert summary["steps"] == 3 and summary["best_step"] == 1  # evals at 1 (best), 2, 3 -> stop


def test_resume_of_a_missing_run_dir_is_a_clear_error(tmp_path):
    from kdkit.cli import main

    assert main(["run", "--resume", str(tmp_path / "nope")]) == 2


def test_method_sees_progress_and_its_state_survives_stop_and_resume(
    plugins, tmp_path, monkeypatch
):
    from safetensors.torch import load_file

    from kdkit.engine.checkpoint import load_state
    from kdkit.engine.loop import Trainer

    from .tinyplug import StepCounter

    monkeypatch.setenv("KDKIT_CACHE", str(tmp_path / "cache"))
    overrides = ("method=step-counter", "training.save_every=2", "training.epochs=3")
    StepCounter.PROGRESS.clear()
    full = run_once(tiny_config(plugins, tmp_path / "full", *overrides), plugins, progress=False)
    # 32 training rows, batch 8: 4 steps per epoch, 3 epochs
    assert StepCounter.PROGRESS == [(s, 12, (s - 1) // 4) for s in range(1, 13)]
    assert full["steps"] == 12

    original = Trainer.train_step

    def stop_at_step_6(self, rows):
        if self.state.step == 6:  # the last checkpoint is step 6's (save_every 2)
            raise KeyboardInterrupt
        return original(self, rows)

    monkeypatch.setattr(Trainer, "train_step", stop_at_step_6)
    with pytest.raises(KeyboardInterrupt):
        run_once(tiny_config(plugins, tmp_path / "cut", *overrides), plugins, progress=False)
    monkeypatch.setattr(Trainer, "train_step", original)
    StepCounter.PROGRESS.clear()
    resumed = run_once(
        tiny_config(plugins, tmp_path / "cut", *overrides),
        plugins,
        resume=str(tmp_path / "cut"),
        progress=False,
    )
    assert StepCounter.PROGRESS == [(s, 12, (s - 1) // 4) for s in range(7, 13)]  # continued
    assert resumed["test"] == full["test"] and resumed["steps"] == 12
    last = [tmp_path / run / "checkpoints" / "last" for run in ("full", "cut")]
    methods = [load_file(str(d / "method.safetensors")) for d in last]
    assert int(methods[0]["steps"]) == int(methods[1]["steps"]) == 12  # the buffer counted on
    students = [load_file(str(d / "student.safetensors")) for d in last]
    assert students[0].keys() == students[1].keys()
    assert all(torch.equal(students[0][k], students[1][k]) for k in students[0])
    extras = [load_state(str(d))["method_extra"] for d in last]
    assert extras[0] == extras[1] == {"epochs_seen": [0, 1, 2]}


def test_an_fp16_run_checkpoints_its_loss_scale_and_a_resume_restores_it(
    plugins, tmp_path, monkeypatch
):
    """The GradScaler's scale is part of the checkpoint: a resumed fp16 run continues with the
    scale it had found instead of restarting at 2^16 (and skipping steps while it backs off)."""
    from kdkit.engine.checkpoint import load_state
    from kdkit.engine.loop import Trainer

    monkeypatch.setenv("KDKIT_CACHE", str(tmp_path / "cache"))
    overrides = ("method=ft", "training.precision=fp16", "training.save_every=2")
    run_once(tiny_config(plugins, tmp_path / "a", *overrides), plugins, progress=False)
    saved = load_state(str(tmp_path / "a" / "checkpoints" / "last"))["grad_scaler"]
    assert saved["scale"] > 0 and saved["growth_interval"] == 2000

    seen: list[float] = []
    original = Trainer.restore

    def restore_and_record(self, state):
        state["grad_scaler"]["scale"] = 128.0  # as if the first segment had backed off to 2^7
        changed = original(self, state)
        seen.append(self.scaler.get_scale())
        return changed

    cut = tmp_path / "b"
    real_step = Trainer.train_step

    def stop_at_step_4(self, rows):
        if self.state.step == 4:
            raise KeyboardInterrupt
        return real_step(self, rows)

    monkeypatch.setattr(Trainer, "train_step", stop_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        run_once(tiny_config(plugins, cut, *overrides), plugins, progress=False)
    monkeypatch.setattr(Trainer, "train_step", real_step)
    monkeypatch.setattr(Trainer, "restore", restore_and_record)
    run_once(tiny_config(plugins, cut, *overrides), plugins, resume=str(cut), progress=False)
    assert seen == [128.0]
