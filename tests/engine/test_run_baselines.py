"""A run's baselines: stored in summary.json, shown in its table, flags, and the bad-input note."""

from __future__ import annotations

import json

import datasets
import pytest

from kdkit.baselines import BaselineOptions, Baselines, SplitBaselines
from kdkit.baselines import runs as run_baselines_mod
from kdkit.baselines.runs import STUDENT_MARGIN, flags, from_summary, run_baselines
from kdkit.data.metrics import multiclass_metrics
from kdkit.engine.runner import run_once
from kdkit.engine.summary import baseline_rows

from .conftest import tiny_config

#: Small enough to tune on the tiny task's 8 validation rows, in well under a second.
TINY = BaselineOptions(
    word_ngrams=((1, 1),),
    char_ngrams=(None,),
    C=(1.0,),
    class_weight=(None,),
    bootstrap=30,
    stratified_draws=20,
    min_validation=4,
)


def test_too_small_splits_give_a_note_and_the_run_still_finishes(plugins, tmp_path, monkeypatch):
    # the tiny task's validation split has 8 rows: under the default 20 needed to tune on
    monkeypatch.setenv("KDKIT_CACHE", str(tmp_path / "cache"))
    summary = run_once(
        tiny_config(plugins, tmp_path / "run", "training.epochs=1"), plugins, progress=False
    )
    assert summary["status"] == "finished"
    note = summary["baselines"]["unavailable"]
    assert note.startswith("baselines unavailable: the validation split has 8 rows, too few")
    assert "\n" not in note and "fix:" in note
    assert note in summary["flags"]
    text = (tmp_path / "run" / "summary.txt").read_text()
    assert "unavailable (see the note below)" in text and note in text
    stored = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert stored["baselines"] == summary["baselines"]


def test_run_stores_baselines_in_summary_and_table(plugins, tmp_path, monkeypatch):
    monkeypatch.setenv("KDKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(run_baselines_mod, "RUN_OPTIONS", TINY)
    summary = run_once(
        tiny_config(plugins, tmp_path / "run", "training.epochs=1"), plugins, progress=False
    )
    entry = json.loads((tmp_path / "run" / "summary.json").read_text())["baselines"]
    b = from_summary(entry)
    assert b is not None and b.task == "tiny" and b.headline_metric == "accuracy"
    assert set(b.splits) == {"validation", "test"} and b.splits["test"].rows == 8
    assert entry["from_cache"] is False and entry["lookup_seconds"] >= 0
    assert set(b.splits["test"].scores) == {"majority", "constant", "stratified", "tfidf_lr"}
    assert b.tuned["tfidf_lr"]["C"] == 1.0
    lo, hi = b.splits["test"].ci["majority"]
    assert lo <= b.score("majority") <= hi
    table = summary["table"]
    assert "majority class (test)" in table and f"{b.score('majority'):.4f}" in table
    # a second run on the same data reads them from the cache
    again = run_once(
        tiny_config(plugins, tmp_path / "run2", "training.epochs=1"), plugins, progress=False
    )
    assert again["baselines"]["from_cache"] is True
    assert from_summary(again["baselines"]) == b


def test_baselines_can_be_switched_off(plugins, tmp_path, monkeypatch):
    monkeypatch.setenv("KDKIT_CACHE", str(tmp_path / "cache"))
    cfg = tiny_config(plugins, tmp_path / "run", "training.epochs=1", "training.baselines=false")
    summary = run_once(cfg, plugins, progress=False)
    assert summary["baselines"] == {"disabled": True}
    assert not (tmp_path / "cache" / "baselines").exists()
    assert "switched off" in summary["table"]


class _Task:
    name, labels, is_pair, headline_metric = "gap", ["a", "b", "c"], False, "top1"

    def __init__(self, splits):
        self.splits = splits

    def load(self):
        return datasets.DatasetDict(
            {k: datasets.Dataset.from_dict(v) for k, v in self.splits.items()}
        )

    def fingerprint(self):
        return "gap-1"

    def evaluate(self, logits, labels):
        return multiclass_metrics(logits, labels)


def test_a_label_missing_from_train_is_a_note_not_a_traceback(tmp_path):
    rows = lambda labels: {"text": [f"x{i} y" for i in range(len(labels))], "label": labels}  # noqa: E731
    task = _Task(
        {"train": rows([0, 1] * 20), "validation": rows([0, 1, 2] * 10), "test": rows([0, 1] * 10)}
    )
    got = run_baselines(task, str(tmp_path), options=TINY)
    assert got.baselines is None
    assert got.note == (
        "baselines unavailable: the validation split has label(s) that train "
        "never shows: 'c' (10 rows); no model trained on train can predict them "
        "(task 'gap'); fix: rebuild the splits so train covers every label, or "
        "drop those labels from the task's label set"
    )
    assert got.summary_entry() == {"unavailable": got.note, "seconds": round(got.seconds, 3)}
    assert baseline_rows(got.summary_entry()) == [("baselines", "unavailable (see the note below)")]


def _baselines(majority: float, lexical: float) -> Baselines:
    split = SplitBaselines(
        rows=100,
        label_counts={"a": 60, "b": 40},
        scores={"majority": majority, "stratified": 0.5, "tfidf_lr": lexical},
        ci={"majority": (0.5, 0.7), "stratified": (0.4, 0.6), "tfidf_lr": (0.6, 0.8)},
        metrics={},
    )
    return Baselines(
        task="t",
        fingerprint="f",
        headline_metric="top1",
        labels=["a", "b"],
        majority_label="a",
        splits={"test": split},
        tuned={},
        best_lexical="tfidf_lr",
        options={},
        seconds=0.0,
        version=2,
    )


def test_flags_name_the_teacher_below_lexical_and_students_at_majority():
    b = _baselines(majority=0.60, lexical=0.70)
    out = flags(b, 0.65, {"FT student": 0.60 + STUDENT_MARGIN, "KD student": 0.62})
    assert out == [
        "warning: the teacher knows less than a linear model on words: distillation results here "
        "are not informative (teacher top1 0.650 <= TF-IDF + logistic regression 0.700 on test).",
        "warning: FT student: the student is at the majority class: it has learnt nothing from the "
        "inputs (student top1 0.610, majority class 'a' 0.600 on test).",
    ]
    assert flags(b, 0.71, {"KD student": 0.62}) == []
    assert flags(None, 0.1, {"s": 0.0}) == []


@pytest.mark.parametrize(
    "entry", [None, {}, {"disabled": True}, {"unavailable": "x"}, {"splits": "bad"}]
)
def test_from_summary_is_none_when_nothing_usable_is_stored(entry):
    assert from_summary(entry) is None


def test_an_unexpected_failure_is_a_note_too(tmp_path):
    class Broken(_Task):
        def load(self):
            raise RuntimeError("disk on fire\nsecond line")

    got = run_baselines(Broken({}), str(tmp_path), options=TINY)
    assert got.baselines is None and got.note == "baselines unavailable: RuntimeError: disk on fire"
