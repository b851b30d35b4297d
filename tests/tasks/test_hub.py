"""The hub code path, with ``datasets.load_dataset`` replaced by an in-memory DatasetDict shaped
like CodeXGLUE's hub copies (no network is used)."""

from __future__ import annotations

import datasets
import pytest

from kdkit.errors import KdkitError
from kdkit.plugins.tasks.clone import CloneOptions, CloneTask
from kdkit.plugins.tasks.defect import DefectOptions, DefectTask


def fake_hub(monkeypatch, splits: dict[str, dict[str, list]]):
    calls = []

    def load_dataset(name, config=None, revision=None):
        calls.append((name, config))
        return datasets.DatasetDict({k: datasets.Dataset.from_dict(v) for k, v in splits.items()})

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_defect_from_hub_columns(monkeypatch):
    rows = {"func": ["int a;", "int b;", "int c;"], "target": [True, False, True], "idx": [0, 1, 2]}
    calls = fake_hub(monkeypatch, {"train": rows, "validation": rows, "test": rows})
    task = DefectTask(DefectOptions(hub="google/code_x_glue_cc_defect_detection"))
    dd = task.load()
    assert calls == [("google/code_x_glue_cc_defect_detection", None)]
    assert dd["train"]["label"] == [1, 0, 1] and dd["test"]["text"][2] == "int c;"


def test_clone_from_hub_columns(monkeypatch):
    rows = {
        "id": [0, 1],
        "id1": [5, 6],
        "id2": [7, 8],
        "func1": ["a", "b"],
        "func2": ["c", "d"],
        "label": [True, False],
    }
    fake_hub(monkeypatch, {"train": rows, "validation": rows, "test": rows})
    dd = CloneTask(CloneOptions(hub="x/bcb")).load()
    assert dd["validation"]["text_pair"] == ["c", "d"] and dd["validation"]["label"] == [1, 0]


def test_hub_without_a_split_is_a_user_error(monkeypatch):
    rows = {"func": ["x"], "target": [0]}
    fake_hub(monkeypatch, {"train": rows, "test": rows})
    with pytest.raises(KdkitError, match="validation"):
        DefectTask(DefectOptions(hub="x/y")).load()
