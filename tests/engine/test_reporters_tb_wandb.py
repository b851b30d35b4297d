"""The tensorboard and wandb reporters log every scalar of a real tiny run with its step: the
values read back (TensorBoard's EventAccumulator, W&B's offline summary) equal metrics.jsonl's."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from kdkit.engine.runner import run_once

from .conftest import tiny_config


def _jsonl(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _expected(records: list[dict]) -> dict[str, dict[int, float]]:
    """tag -> {step: value} as the reporters name them, from metrics.jsonl."""
    out: dict[str, dict[int, float]] = {}
    for r in records:
        if r["event"] == "step":
            prefix = "train"
        elif r["event"] == "eval":
            prefix = r["split"]
        else:
            continue
        for k, v in r.items():
            if k not in ("event", "step", "split") and isinstance(v, (int, float)):
                out.setdefault(f"{prefix}/{k}", {})[r["step"]] = float(v)
    return out


def test_tensorboard_event_files_hold_the_scalars_of_metrics_jsonl(plugins, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("KDKIT_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "tb"
    summary = run_once(
        tiny_config(plugins, run_dir, "reporters=[jsonl, tensorboard]", "training.epochs=1"),
        plugins,
        progress=False,
    )
    records = _jsonl(run_dir)
    expected = _expected(records)
    # every console scalar is there: the loss terms, lr, throughput and validation metrics
    assert {
        "train/loss",
        "train/kd",
        "train/ce",
        "train/lr",
        "train/examples_per_s",
        "validation/accuracy",
    } <= set(expected)

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert set(expected) <= tags
    for tag, by_step in expected.items():
        got = {e.step: e.value for e in acc.Scalars(tag)}
        assert set(got) == set(by_step), tag
        for step, value in by_step.items():  # event files store float32
            assert math.isclose(got[step], value, rel_tol=1e-6, abs_tol=1e-30), (tag, step)
    # the summary's numbers, at the last step
    final = acc.Scalars("summary/test/" + summary["headline_metric"])
    assert [(e.step, pytest.approx(e.value, rel=1e-6)) for e in final] == [
        (summary["steps"], summary["test"][summary["headline_metric"]])
    ]


def _wandb_records(path: Path):
    """The records of an offline ``run-*.wandb`` file (LevelDB log framing: 7-byte file header,
    32 KiB blocks, each chunk ``crc32(4) length(2, LE) type(1)``; FULL=1 FIRST=2 MIDDLE=3 LAST=4)."""
    from wandb.proto import wandb_internal_pb2

    data, pos, block, pending = path.read_bytes(), 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 2):
            pending = chunk
        elif kind in (3, 4):
            pending += chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def test_wandb_offline_run_logs_every_scalar_with_its_step(plugins, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("KDKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("WANDB_MODE", "offline")  # respected: the reporter sets no mode
    run_dir = tmp_path / "wb"
    summary = run_once(
        tiny_config(plugins, run_dir, "reporters=[jsonl, wandb]", "training.epochs=1"),
        plugins,
        progress=False,
    )
    runs = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, "WANDB_MODE=offline must give one offline run in RUN_DIR/wandb"
    history: dict[int, dict] = {}  # W&B joins what is logged at one step into one row
    final: dict[str, float] = {}
    # wandb's service process may still be writing the file when finish() returns: wait for
    # the run's closing "exit" record
    deadline = time.monotonic() + 60
    while not any(r.WhichOneof("record_type") == "exit" for r in _wandb_records(runs[0])):
        assert time.monotonic() < deadline, "the offline run file never got its exit record"
        time.sleep(0.5)
    for record in _wandb_records(runs[0]):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            row = {
                i.key or "/".join(i.nested_key): json.loads(i.value_json)
                for i in record.history.item
            }
            history.setdefault(row["_step"], {}).update(row)
        elif kind == "summary":
            final.update({i.key: json.loads(i.value_json) for i in record.summary.update if i.key})
    expected = _expected(_jsonl(run_dir))
    assert {"train/loss", "train/lr", "train/examples_per_s", "validation/accuracy"} <= set(
        expected
    )
    for tag, by_step in expected.items():
        for step, value in by_step.items():
            assert history[step][tag] == pytest.approx(value, rel=1e-12), (tag, step)
    assert max(history) == summary["steps"]
    head = summary["headline_metric"]
    assert final[f"summary/test/{head}"] == pytest.approx(summary["test"][head])
