"""Imported teacher outputs train a run exactly like kdkit's own teacher cache (full logits and
top-k with k = C), with no teacher section; a mismatched import is refused."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import save_file

from kdkit.api import Needs
from kdkit.data.example_ids import example_ids
from kdkit.engine.batching import Encoder, make_split
from kdkit.engine.runner import run_once
from kdkit.engine.teacher_cache import TeacherPass, compute_outputs
from kdkit.engine.teacher_import import ImportRequest, import_outputs
from kdkit.errors import KdkitError
from kdkit.testing.tiny import TinyTeacher

from .conftest import tiny_config

CPU = torch.device("cpu")


def _steps(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == "step"]


def _teacher_logits(splits, split):
    teacher = TinyTeacher()
    enc = Encoder(teacher.encode)
    rows = make_split(split, splits[split], False, 64, enc, enc).teacher
    return compute_outputs(TeacherPass(teacher, Needs(), rows, CPU, 16, progress=False))["logits"]


def _write(path, splits, split, *, topk_t0=None):
    """An import file as an outside tool writes it: rows reversed, ids by content."""
    logits = _teacher_logits(splits, split).flip(0)
    ids = torch.tensor(example_ids(splits[split])).flip(0)
    meta = {
        "format": "kdkit-teacher-outputs",
        "format_version": "1",
        "model": "tiny-teacher",
        "split": split,
        "num_classes": "3",
        "temperature": "1",
    }
    tensors = {"ids": ids}
    if topk_t0 is None:
        tensors["logits"] = logits
    else:
        log_p = torch.log_softmax(logits / topk_t0, -1)
        tensors["topk_logprobs"], idx = log_p.topk(3, dim=-1)
        tensors["topk_indices"] = idx.to(torch.int32)
        meta["temperature"] = str(topk_t0)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=meta)
    return path


@pytest.mark.parametrize("topk_t0", [None, 1.5], ids=["full", "topk-k=C"])
def test_a_run_from_imported_outputs_matches_a_run_from_kdkit_own_cache(
    plugins, tiny_splits, tmp_path, monkeypatch, topk_t0
):
    cache = tmp_path / "cache"
    monkeypatch.setenv("KDKIT_CACHE", str(cache))
    task, splits = tiny_splits
    own = run_once(
        tiny_config(plugins, tmp_path / "own", "training.epochs=1"), plugins, progress=False
    )
    for split in ("train", "test"):
        path = _write(tmp_path / f"{split}.safetensors", splits, split, topk_t0=topk_t0)
        import_outputs(ImportRequest(path, task, "tiny", None, "tt", cache))
    overrides = ("training.epochs=1", "teacher=null", "cache.teacher_import=tt")
    imp = run_once(tiny_config(plugins, tmp_path / "imp", *overrides), plugins, progress=False)
    assert imp["teacher_signal"] == "import" and own["teacher_signal"] == "cache"
    assert imp["teacher"]["name"] == "imported:tiny-teacher"
    assert imp["teacher"]["imported"]["source_model"] == "tiny-teacher"
    for key, value in own["teacher"]["test"].items():  # the imported test split scores it
        assert math.isclose(imp["teacher"]["test"][key], value, abs_tol=1e-6), key
    a, b = _steps(tmp_path / "own"), _steps(tmp_path / "imp")
    assert len(a) == len(b) == 4
    for ra, rb in zip(a, b, strict=True):
        assert math.isclose(ra["kd"], rb["kd"], rel_tol=1e-5, abs_tol=1e-6)
        assert math.isclose(ra["loss"], rb["loss"], rel_tol=1e-5, abs_tol=1e-6)
    assert imp["test"] == pytest.approx(own["test"], abs=1e-6)


def test_an_import_of_other_data_or_a_teacher_section_beside_it_is_refused(
    plugins, tiny_splits, tmp_path, monkeypatch
):
    cache = tmp_path / "cache"
    monkeypatch.setenv("KDKIT_CACHE", str(cache))
    task, splits = tiny_splits
    path = _write(tmp_path / "t.safetensors", splits, "train")
    import_outputs(ImportRequest(path, task, "tiny", None, "tt", cache))
    meta_path = cache / "teacher-imports" / "tt-train" / "meta.json"
    with pytest.raises(KdkitError, match="teacher section and cache.teacher_import"):
        run_once(
            tiny_config(plugins, tmp_path / "a", "cache.teacher_import=tt"), plugins, progress=False
        )
    with pytest.raises(KdkitError, match="no imported teacher outputs named 'nope'"):
        run_once(
            tiny_config(plugins, tmp_path / "b", "teacher=null", "cache.teacher_import=nope"),
            plugins,
            progress=False,
        )
    meta = json.loads(meta_path.read_text())
    meta["data_fingerprint"] = "other"
    meta_path.write_text(json.dumps(meta))  # (the manifest now flags the edit first)
    with pytest.raises(KdkitError, match="imported teacher outputs tt-train is damaged"):
        run_once(
            tiny_config(plugins, tmp_path / "c", "teacher=null", "cache.teacher_import=tt"),
            plugins,
            progress=False,
        )


def test_load_import_refuses_other_data_and_feature_needs(tiny_splits, tmp_path):
    from kdkit.engine.teacher_import import load_import

    task, splits = tiny_splits
    cache = tmp_path / "cache"
    path = _write(tmp_path / "t.safetensors", splits, "train")
    import_outputs(ImportRequest(path, task, "tiny", None, "tt", cache))

    class Other:
        def fingerprint(self):
            return "0ther"

    with pytest.raises(KdkitError, match="were made for other data: 32 rows with data finger"):
        load_import("tt", "train", cache, Other(), 32, Needs(), CPU)
    with pytest.raises(KdkitError, match="this run's train split has 31 rows"):
        load_import("tt", "train", cache, task, 31, Needs(), CPU)
    with pytest.raises(KdkitError, match=r"hold logits only.*pooled \[2\]"):
        load_import("tt", "train", cache, task, 32, Needs(pooled_layers=(2,)), CPU)
    signal = load_import("tt", "train", cache, task, 32, Needs(), CPU)
    torch.testing.assert_close(signal.logits, _teacher_logits(splits, "train"))
