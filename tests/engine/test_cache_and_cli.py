"""Teacher cache (reuse, mismatch refused with both fingerprints), `kdkit cache`, `kdkit predict`."""

from __future__ import annotations

import json

import pytest
import torch

from kdkit.api import Needs
from kdkit.cli import main
from kdkit.engine.batching import Encoder, make_split
from kdkit.engine.teacher_cache import CacheSlot, TeacherPass, load_or_build
from kdkit.errors import KdkitError
from kdkit.testing.tiny import TinyTeacher


class CountingTeacher(TinyTeacher):
    """A tiny teacher that counts the rows it is run on."""

    rows = 0

    def __call__(self, encoded, needs):
        CountingTeacher.rows += encoded.input_ids.shape[0]
        return super().__call__(encoded, needs)


def _train(tiny_splits, teacher):
    task, splits = tiny_splits
    return make_split(
        "train", splits["train"], False, 64, Encoder(teacher.encode), Encoder(teacher.encode)
    )


def test_cache_is_built_once_reused_and_equals_live_outputs(tiny_splits, tmp_path):
    task, _ = tiny_splits
    teacher = CountingTeacher()
    train = _train(tiny_splits, teacher)
    needs = Needs(True, (), (2,), True)
    job = TeacherPass(teacher, needs, train.teacher, torch.device("cpu"), 5, progress=False)
    slot = CacheSlot("train", task.fingerprint(), 64, tmp_path)
    CountingTeacher.rows = 0
    first = load_or_build(job, slot)
    assert CountingTeacher.rows == len(train) == 32
    again = load_or_build(job, slot)
    assert CountingTeacher.rows == 32  # read from the safetensors shards, teacher not run
    batch = train.batch([5, 1, 30])
    live = teacher(batch.teacher, needs)
    for cached in (first(batch), again(batch)):
        torch.testing.assert_close(cached.logits, live.logits)
        torch.testing.assert_close(cached.pooled[2], live.pooled[2])
        torch.testing.assert_close(cached.embedding, live.embedding)


def test_a_cache_of_another_teacher_is_refused_with_both_fingerprints(tiny_splits, tmp_path):
    task, _ = tiny_splits
    a, b = TinyTeacher(seed=1), TinyTeacher(seed=2)
    train = _train(tiny_splits, a)
    slot = CacheSlot("train", task.fingerprint(), 64, tmp_path, str(tmp_path / "mine"))
    cpu = torch.device("cpu")
    load_or_build(TeacherPass(a, Needs(), train.teacher, cpu, 8, progress=False), slot)
    with pytest.raises(KdkitError) as err:
        load_or_build(TeacherPass(b, Needs(), train.teacher, cpu, 8, progress=False), slot)
    assert a.fingerprint() in err.value.what and b.fingerprint() in err.value.what
    assert "teacher_fingerprint" in err.value.what


def test_cache_ls_and_clear(tiny_splits, tmp_path, capsys):
    task, _ = tiny_splits
    teacher = TinyTeacher()
    train = _train(tiny_splits, teacher)
    entry = load_or_build(
        TeacherPass(teacher, Needs(), train.teacher, torch.device("cpu"), 8, progress=False),
        CacheSlot("train", task.fingerprint(), 64, tmp_path),
    )
    assert main(["cache", "--dir", str(tmp_path), "ls", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["entries"]
    assert [(e["kind"], e["key"], e["rows"]) for e in listed] == [
        ("teacher-outputs", entry.directory.name, 32)
    ]
    assert main(["cache", "--dir", str(tmp_path), "clear"]) == 2  # nothing named: refused
    assert entry.directory.exists()
    assert main(["cache", "--dir", str(tmp_path), "clear", entry.directory.name]) == 0
    assert not entry.directory.exists()


def test_predict_cli_matches_the_run_predictions(plugins, tmp_path, monkeypatch, capsys):
    from kdkit.engine.runner import run_once
    from kdkit.testing.tiny import TinyTask

    from .conftest import tiny_config

    monkeypatch.setenv("KDKIT_CACHE", str(tmp_path / "cache"))
    run_once(tiny_config(plugins, tmp_path / "r", "method=ft"), plugins, progress=False)
    rows = TinyTask().load()["test"]["text"]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in rows))
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "r"), "--jsonl", str(src), "--max-length", "64"]) == 0
    got = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    saved = [json.loads(line) for line in (tmp_path / "r" / "predictions-test.jsonl").open()]
    assert [g["label"] for g in got] == [s["label"] for s in saved]
    assert [g["probability"] for g in got] == pytest.approx(
        [s["probability"] for s in saved], abs=1e-5
    )
