"""Distributed distillation on 2 CPU processes (gloo) against the single-process engine.

What must hold (issue 8):

* evaluation: gathered logits are bit-identical to one process's, metrics exactly equal;
* teacher cache: a 2-rank build gives the same files and the same tensors as a 1-rank build;
* training: a 2-rank run with the same global batch and seed reaches the single-process metrics;
  per-step losses agree to ``LOSS_RTOL`` and final weights to ``WEIGHT_ATOL`` (float summation
  order differs: each rank sums its rows, then DDP averages the two gradients);
* resume: a 2-rank run interrupted and resumed ends exactly where the uninterrupted one ends;
* rank 0 alone writes the run directory's files, and the documented CLI launch completes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kdkit.engine import teacher_cache
from kdkit.engine.batching import EncodedRows, Encoder, make_split, split_examples
from kdkit.engine.distributed import Dist, loss_weight, rank_batches, split_rows
from kdkit.engine.loop import predict_logits
from kdkit.engine.runner import run_once
from kdkit.testing.tiny import TinyTask, TinyTeacher
from tests.engine.conftest import tiny_config

from .worker import (
    CACHE_NEEDS,
    CACHE_SHARD_ROWS,
    EVAL_BATCH_SIZES,
    RUN_A,
    RUN_B,
    TOKEN_NEEDS,
    TOKEN_SHARD_ROWS,
    tiny_student,
)

#: Measured: the largest relative per-step loss (and grad-norm) difference of runs A and B is
#: 1.8e-7 (fp32).
LOSS_RTOL = 1e-5
#: Measured: the largest final-weight difference is 3.8e-6 (run A) and 3.4e-7 (run B).
WEIGHT_ATOL = 5e-5
#: Test-set probabilities of the best students (written rounded to 6 decimals).
PROB_ATOL = 1e-5


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _steps(run_dir: Path) -> list[dict]:
    return [r for r in _jsonl(run_dir / "metrics.jsonl") if r["event"] == "step"]


# ----------------------------------------------------------------------------- pure helpers


def test_split_rows_partitions_every_batch_in_rank_order():
    assert [split_rows(list(range(10)), r, 4) for r in range(4)] == [
        [0, 1, 2],
        [3, 4, 5],
        [6, 7],
        [8, 9],
    ]
    assert [split_rows([7], r, 2) for r in range(2)] == [[7], []]
    for n in range(0, 12):
        for world in (1, 2, 3, 5):
            rows = list(range(100, 100 + n))
            shares = [split_rows(rows, r, world) for r in range(world)]
            assert sum(shares, []) == rows
            assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_loss_weight_turns_an_average_of_rank_means_into_the_global_mean():
    # rows' losses 1,2,3 on rank 0 and 10,20 on rank 1 (global batch 5)
    means, sizes = [2.0, 15.0], [3, 2]
    ddp_average = sum(loss_weight(n, 5, 2) * m for n, m in zip(sizes, means)) / 2
    assert ddp_average == pytest.approx((1 + 2 + 3 + 10 + 20) / 5)
    assert loss_weight(0, 1, 2) == 0.0 and loss_weight(4, 8, 2) == 1.0


def test_rank_batches_deal_whole_batches_round_robin():
    plan = [[0, 1], [2, 3], [4, 5], [6]]
    assert rank_batches(plan, 0, 2) == [[0, 1], [4, 5]]
    assert rank_batches(plan, 1, 2) == [[2, 3], [6]]
    assert rank_batches(plan, 4, 5) == []


def test_setup_without_a_launcher_is_one_process(monkeypatch, capsys):
    from kdkit.engine.distributed import setup
    from kdkit.errors import KdkitError

    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert setup("auto", "cpu") == (Dist(), "cpu")
    assert setup("ddp", "cpu") == (Dist(), "cpu")  # the same file runs on one process ...
    assert "not started by a launcher" in capsys.readouterr().err  # ... and says so
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    assert setup("fsdp", "cpu")[0].mode == "none"  # torchrun --nproc_per_node 1
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(KdkitError, match="launcher started 2 processes") as err:
        setup("none", "cpu")  # refused before joining any group
    assert err.value.where == "training.distributed"


def test_one_process_helpers_are_the_identity():
    d = Dist()
    assert not d.enabled and d.is_main
    assert d.weighted_mean({"a": 2.5}, 3) == {"a": 2.5}
    got = d.gather_rows(torch.tensor([[1.0], [2.0]]), [1, 0], 2)
    assert torch.equal(got, torch.tensor([[2.0], [1.0]]))
    assert d.on_main(lambda: 7) == 7


# ----------------------------------------------------------------------------- 2 processes


def test_distributed_evaluation_equals_single_process_exactly(launched):
    out, _ = launched
    task = TinyTask()
    student = tiny_student()
    split = make_split("train", task.load()["train"], False, 64, Encoder(student.encode))
    got = load_file(str(out / "eval_logits.safetensors"))
    for bs in EVAL_BATCH_SIZES:
        one = predict_logits(student, split, bs, torch.device("cpu"))
        assert got[f"bs{bs}"].shape == one.shape == (len(split), 3)
        assert torch.equal(got[f"bs{bs}"], one), bs  # bit-identical, every row exactly once
        assert task.evaluate(got[f"bs{bs}"], split.labels) == task.evaluate(one, split.labels)
    assert task.evaluate(one, split.labels) == {"accuracy": 5 / 32}  # a metric that can differ


def test_sharded_teacher_cache_equals_a_single_process_build(launched, tmp_path, monkeypatch):
    out, _ = launched
    monkeypatch.setattr(teacher_cache, "SHARD_ROWS", CACHE_SHARD_ROWS)
    task, teacher = TinyTask(), TinyTeacher()
    examples = split_examples(task.load()["train"], False)
    rows = EncodedRows.build(teacher.encode, examples, 64, 0)
    one = teacher_cache.load_or_build(
        teacher_cache.TeacherPass(teacher, CACHE_NEEDS, rows, torch.device("cpu"), 5, False),
        teacher_cache.CacheSlot("train", task.fingerprint(), 64, tmp_path),
    )
    dist_dir = out / "cache-dist" / "teacher-outputs" / one.directory.name  # the same key
    files = sorted(p.name for p in dist_dir.iterdir())
    assert files == sorted(p.name for p in one.directory.iterdir())
    assert len([f for f in files if f.startswith("shard-")]) == 5  # 32 rows / 7 per shard
    meta_d = json.loads((dist_dir / "meta.json").read_text())
    meta_1 = json.loads((one.directory / "meta.json").read_text())
    assert {k: v for k, v in meta_d.items() if k != "created"} == {
        k: v for k, v in meta_1.items() if k != "created"
    }
    for name in files:
        if name.startswith("shard-"):
            a, b = load_file(str(dist_dir / name)), load_file(str(one.directory / name))
            assert a.keys() == b.keys() == {"logits", "pooled.1", "pooled.2", "embedding"}
            assert all(torch.equal(a[k], b[k]) for k in a), name
    assert json.loads((out / "cache_reload.json").read_text()) == {"reloaded_equal": [True, True]}
    assert not [p for p in dist_dir.parent.iterdir() if p.name.startswith(".")]  # no leftovers


def test_sharded_token_cache_equals_a_single_process_build(launched, tmp_path, monkeypatch):
    from kdkit.engine import token_cache

    out, _ = launched
    monkeypatch.setattr(token_cache, "TOKEN_SHARD_ROWS", TOKEN_SHARD_ROWS)
    task, teacher = TinyTask(), TinyTeacher()
    rows = EncodedRows.build(teacher.encode, split_examples(task.load()["train"], False), 64, 0)
    one = teacher_cache.load_or_build(
        teacher_cache.TeacherPass(teacher, TOKEN_NEEDS, rows, torch.device("cpu"), 5, False),
        teacher_cache.CacheSlot("train", task.fingerprint(), 64, tmp_path),
    )
    dist_dir = out / "cache-dist" / "teacher-outputs" / one.directory.name  # the same key
    files = sorted(p.name for p in dist_dir.iterdir())
    assert files == sorted(p.name for p in one.directory.iterdir())
    assert len([f for f in files if f.startswith("tokens-")]) == 4  # 7 batches of 5, 2 a shard
    meta_d = json.loads((dist_dir / "meta.json").read_text())
    meta_1 = json.loads((one.directory / "meta.json").read_text())
    assert {k: v for k, v in meta_d.items() if k != "created"} == {
        k: v for k, v in meta_1.items() if k != "created"
    }
    for name in files:
        if name.startswith("tokens-"):
            a, b = load_file(str(dist_dir / name)), load_file(str(one.directory / name))
            assert a.keys() == b.keys()
            assert all(torch.equal(a[k], b[k]) for k in a), name
    got = load_file(str(out / "token_lookup.safetensors"))
    states, mask, _ = one.tokens.lookup(torch.arange(len(rows)), torch.device("cpu"))
    assert torch.equal(got["mask"], mask)
    assert all(torch.equal(got[f"hidden.{k}"], v) for k, v in states.items())


@pytest.mark.parametrize("name, overrides", [("run-a", RUN_A), ("run-b", RUN_B)])
def test_ddp_run_matches_the_single_process_run(
    launched, dist_plugins, tmp_path, monkeypatch, name, overrides
):
    out, env = launched
    monkeypatch.setenv("KDKIT_CACHE", env["KDKIT_CACHE"])
    one = run_once(
        tiny_config(dist_plugins, tmp_path / name, *overrides), dist_plugins, progress=False
    )
    two = json.loads((out / name / "summary.json").read_text())
    assert two["distributed"] == {"mode": "ddp", "world_size": 2, "backend": "gloo"}
    assert two["steps"] == one["steps"] and two["best_step"] == one["best_step"]
    assert two["test"] == one["test"] and two["best_validation"] == one["best_validation"]
    a, b = _steps(out / name), _steps(tmp_path / name)
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        for key in ("loss", "grad_norm", "lr"):
            assert ra[key] == pytest.approx(rb[key], rel=LOSS_RTOL), (ra["step"], key)
    w2 = load_file(str(out / name / "checkpoints" / "last" / "student.safetensors"))
    w1 = load_file(str(tmp_path / name / "checkpoints" / "last" / "student.safetensors"))
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], atol=WEIGHT_ATOL, rtol=0)
    # the tiny split's accuracy is coarse (8 rows): the best model's test probabilities are not
    p2, p1 = (
        _jsonl(out / name / "predictions-test.jsonl"),
        _jsonl(tmp_path / name / "predictions-test.jsonl"),
    )
    assert [r["label"] for r in p2] == [r["label"] for r in p1] and len(p1) == 8
    assert [r["probability"] for r in p2] == pytest.approx(
        [r["probability"] for r in p1], abs=PROB_ATOL
    )


@pytest.mark.parametrize("full_name, resumed_name", [("run-a", "run-c"), ("run-f", "run-g")])
def test_interrupted_run_resumes_to_the_uninterrupted_result(launched, full_name, resumed_name):
    # run-a/run-c: DDP; run-f/run-g: FSDP (optimizer state gathered whole, keyed by name)
    out, _ = launched
    flag = json.loads((out / f"{resumed_name}-interrupted.json").read_text())
    assert flag == {"summary_exists": False}
    full = json.loads((out / full_name / "summary.json").read_text())
    resumed = json.loads((out / resumed_name / "summary.json").read_text())
    assert resumed["steps"] == full["steps"]
    assert resumed["test"] == full["test"] and resumed["best_validation"] == full["best_validation"]
    a = load_file(str(out / full_name / "checkpoints" / "last" / "student.safetensors"))
    c = load_file(str(out / resumed_name / "checkpoints" / "last" / "student.safetensors"))
    assert a.keys() == c.keys() and all(torch.equal(a[k], c[k]) for k in a)
    steps = [r["step"] for r in _steps(out / resumed_name)]
    assert steps[:5] == [1, 2, 3, 4, 5] and steps[-1] == full["steps"]


def test_fsdp_run_matches_the_ddp_run(launched):
    out, _ = launched
    ddp = json.loads((out / "run-a" / "summary.json").read_text())
    fsdp = json.loads((out / "run-f" / "summary.json").read_text())
    assert fsdp["distributed"] == {"mode": "fsdp", "world_size": 2, "backend": "gloo"}
    assert fsdp["test"] == ddp["test"] and fsdp["steps"] == ddp["steps"]
    for ra, rb in zip(_steps(out / "run-f"), _steps(out / "run-a"), strict=True):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=LOSS_RTOL)
    # files are written from the gathered weights: the same names and shapes as DDP's
    wf = load_file(str(out / "run-f" / "checkpoints" / "last" / "student.safetensors"))
    wd = load_file(str(out / "run-a" / "checkpoints" / "last" / "student.safetensors"))
    assert wf.keys() == wd.keys()
    for k in wd:
        torch.testing.assert_close(wf[k], wd[k], atol=WEIGHT_ATOL, rtol=0)
    assert (out / "run-f" / "best" / "model" / "kdkit.json").is_file()


def test_a_user_error_seen_by_rank_0_reaches_every_rank(launched):
    out, _ = launched
    errors = json.loads((out / "run-a-again.json").read_text())["errors"]
    assert errors == ["the run directory already holds a run"] * 2


def test_other_ranks_wait_for_rank_0_builds_longer_than_the_collective_timeout(tmp_path):
    from .conftest import HERE, torchrun

    env = {**os.environ, "KDKIT_DIST_TIMEOUT": "2", "OMP_NUM_THREADS": "1"}
    proc = torchrun(str(HERE / "slow_build.py"), "5", env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # (the two processes share stdout: lines may interleave)
    assert "rank 0 passed" in proc.stdout and "rank 1 passed" in proc.stdout


def test_a_nan_loss_stops_every_rank_with_the_last_good_checkpoint(launched):
    out, _ = launched
    stops = json.loads((out / "run-nan.json").read_text())["stopped"]
    assert stops == ["loss term 'ce' is nan at step 6"] * 2
    assert json.loads((out / "run-nan" / "summary.json").read_text())["status"] == "stopped"
    state = (out / "run-nan" / "checkpoints" / "last" / "state.json").read_text()
    assert '"step", 4' in state.replace("[", "").replace("]", "")  # the last good: step 4


def test_rank_0_alone_reports_and_the_documented_cli_launch_completes(launched):
    out, _ = launched
    for name in ("run-a", "run-cli"):
        records = _jsonl(out / name / "metrics.jsonl")
        steps = [r["step"] for r in records if r["event"] == "step"]
        assert steps == sorted(set(steps))  # each step reported once: by rank 0 only
    cli = json.loads((out / "run-cli" / "summary.json").read_text())
    full = json.loads((out / "run-a" / "summary.json").read_text())
    assert cli["status"] == "finished" and cli["distributed"]["world_size"] == 2
    assert cli["test"] == full["test"]  # same configuration, same result
