"""kdkit.baselines on tiny constructed tasks whose answers are known."""

from __future__ import annotations

import json
import random

import datasets
import pytest
import torch

from kdkit.baselines import (
    CONSTANT_FLAG,
    STUDENT_FLAG,
    TEACHER_FLAG,
    BaselineOptions,
    Baselines,
    cache_path,
    compute_baselines,
    jaccard,
    verdict,
)
from kdkit.data.metrics import binary_metrics, multiclass_metrics
from kdkit.errors import KdkitError

#: A small grid keeps each fit well under a second.
FAST = BaselineOptions(
    word_ngrams=((1, 1),),
    char_ngrams=(None,),
    C=(1.0, 10.0),
    class_weight=(None,),
    bootstrap=100,
    stratified_draws=100,
)

WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "eps",
    "zeta",
    "theta",
    "iota",
    "kappa",
    "mu",
    "nu",
    "xi",
    "rho",
    "tau",
    "phi",
    "chi",
    "psi",
    "omega",
]
KEYWORDS = ["open_file", "parse_int", "lookup_key"]


class FakeTask:
    """A minimal :class:`kdkit.api.Task` over given rows."""

    def __init__(self, name, labels, rows, *, pair=False, headline="top1"):
        self.name, self.labels, self.is_pair, self.headline_metric = name, labels, pair, headline
        self.rows = rows
        self.loads = 0

    def load(self):
        self.loads += 1
        return datasets.DatasetDict(
            {s: datasets.Dataset.from_dict(r) for s, r in self.rows.items()}
        )

    def fingerprint(self):
        return f"{self.name}-{len(self.rows['train']['label'])}"

    def evaluate(self, logits, labels):
        if self.headline_metric == "top1":
            return multiclass_metrics(logits, labels)
        return binary_metrics(logits, labels)


def _noise(rng, n=8):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def keyword_task(n_train=60, n_eval=30, *, random_labels=False, seed=0) -> FakeTask:
    """Label = which keyword the function calls (or a label independent of the text)."""
    rng = random.Random(seed)

    def split(n, skew):
        texts, labels = [], []
        for i in range(n):
            y = 0 if i < int(n * skew) else 1 + i % 2  # label 0 is the majority
            kw = KEYWORDS[y] if not random_labels else rng.choice(KEYWORDS)
            texts.append(f"def f(x):\n    {_noise(rng, 2)} = {kw}(x)\n    return {_noise(rng, 1)}")
            labels.append(y)
        return {"text": texts, "label": labels}

    rows = {
        "train": split(n_train, 0.5),
        "validation": split(n_eval, 0.4),
        "test": split(n_eval, 0.4),
    }
    return FakeTask("keyword" if not random_labels else "random", ["A", "B", "C"], rows)


def pair_task(seed=0) -> FakeTask:
    """Positives share most tokens with their pair, negatives share none: Jaccard separates them."""
    rng = random.Random(seed)

    def split(n):
        text, pair, label = [], [], []
        for i in range(n):
            toks = rng.sample(WORDS, 6)
            a = " ".join(toks)
            if i % 2:
                b, y = " ".join(toks[:5] + ["extra"]), 1  # 5 shared of 7: Jaccard 5/7
            else:
                b, y = " ".join(f"{t}_{i}" for t in toks), 0  # no shared token: Jaccard 0
            text.append(a), pair.append(b), label.append(y)
        return {"text": text, "text_pair": pair, "label": label}

    rows = {"train": split(40), "validation": split(30), "test": split(30)}
    return FakeTask("pairs", ["different", "clone"], rows, pair=True, headline="f1")


def test_keyword_task_lexical_is_perfect_and_majority_is_hand_computed(tmp_path):
    task = keyword_task()
    b = compute_baselines(task, cache_dir=tmp_path, options=FAST)
    # train: 30 of 60 rows are label 0 -> majority "A"; val/test: 12 of 30 rows are label 0
    assert b.majority_label == "A"
    assert b.splits["test"].majority == pytest.approx(12 / 30)
    assert b.splits["validation"].majority == pytest.approx(12 / 30)
    assert b.splits["test"].lexical["tfidf_lr"] == 1.0
    assert b.best_lexical == "tfidf_lr"
    assert b.tuned["tfidf_lr"]["val_score"] == 1.0
    # stratified: train frequencies p = (1/2, 1/4, 1/4), test mix q = (12, 9, 9)/30
    expected = 0.5 * 12 / 30 + 0.25 * 9 / 30 + 0.25 * 9 / 30
    assert b.splits["test"].stratified == pytest.approx(expected, abs=0.02)
    lo, hi = b.splits["test"].ci["stratified"]
    assert lo < expected < hi
    # a constant predictor's bootstrap interval holds its score; a perfect one is [1, 1]
    lo, hi = b.splits["test"].ci["majority"]
    assert lo < 12 / 30 < hi
    assert b.splits["test"].ci["tfidf_lr"] == (1.0, 1.0)
    assert b.splits["test"].label_counts == {"A": 12, "B": 9, "C": 9}
    assert b.splits["test"].rows == 30
    # the majority logits are the log train prior: top-3 of 3 classes is always right
    assert b.splits["test"].metrics["majority"]["top3"] == 1.0


def test_random_labels_lexical_is_near_chance(tmp_path):
    task = keyword_task(n_train=150, n_eval=120, random_labels=True, seed=3)
    b = compute_baselines(task, cache_dir=tmp_path, options=FAST)
    # the text carries no information about the label: no better than predicting the prior
    # (majority 0.4 on test); 120 rows give a standard error of about 0.045
    assert b.splits["test"].lexical["tfidf_lr"] < 0.4 + 0.12
    assert b.splits["test"].lexical["tfidf_lr"] > 0.15


def test_pair_task_jaccard_threshold_separates_and_tfidf_pair_features_tuned(tmp_path):
    task = pair_task()
    b = compute_baselines(task, cache_dir=tmp_path, options=FAST)
    assert b.headline_metric == "f1"
    assert b.splits["test"].lexical["jaccard"] == 1.0
    t = b.tuned["jaccard"]
    assert 0.0 <= t["threshold"] < 5 / 7 and t["similar_label"] == 1
    assert b.tuned["tfidf_lr"]["pair_features"] in ("diff_prod", "joined")
    assert "jaccard" in dict((k, v) for k, v in b.splits["test"].lexical.items())
    # majority on a balanced split: train has 20/20, the tie goes to class 0 -> F1 of class 1 = 0
    assert b.majority_label == "different"
    assert b.splits["test"].majority == 0.0
    # ... which always predicting "clone" beats: chosen on validation (F1 of "always clone" on
    # 15 of 30 positives = 2 * 0.5 / 1.5), scored on test (also 15 of 30)
    assert b.constant_label == "clone" and b.tuned["constant"]["val_score"] == pytest.approx(2 / 3)
    assert b.splits["test"].constant == pytest.approx(2 / 3)
    assert b.splits["test"].trivial == pytest.approx(2 / 3)
    assert b.splits["test"].metrics["constant"]["recall"] == 1.0
    # the table lists it (it is not the majority class) and a student at it is flagged
    assert ("always 'clone'", pytest.approx(2 / 3), b.splits["test"].ci["constant"]) in b.table()
    text = verdict(0.67, b, role="student")
    assert text is not None and text.startswith(CONSTANT_FLAG) and "always 'clone' 0.667" in text
    assert verdict(0.70, b, role="student") is None


def test_jaccard_value():
    assert jaccard("a b c", "b c d") == pytest.approx(2 / 4)
    assert jaccard("f(x)", "f(y)") == pytest.approx(3 / 5)  # tokens f ( x ) vs f ( y )
    assert jaccard("", "") == 1.0


def test_second_call_reads_cache_and_corrupt_cache_is_recomputed(tmp_path):
    task = keyword_task()
    first = compute_baselines(task, cache_dir=tmp_path, options=FAST)
    path = cache_path(task, ("validation", "test"), FAST, tmp_path)
    assert path.is_file() and path.parent == tmp_path / "baselines"
    assert json.loads(path.read_text())["fingerprint"] == task.fingerprint()
    loads = task.loads
    second = compute_baselines(task, cache_dir=tmp_path, options=FAST)
    assert second.from_cache and not first.from_cache
    assert task.loads == loads  # the cache hit never touched the data
    assert second == first
    # different options -> a different cache entry
    other = BaselineOptions(**{**FAST.__dict__, "C": (1.0,)})
    assert cache_path(task, ("validation", "test"), other, tmp_path) != path

    path.write_text("{not json")
    with pytest.warns(UserWarning, match="unreadable"):
        third = compute_baselines(task, cache_dir=tmp_path, options=FAST)
    assert not third.from_cache and third == first
    assert Baselines.from_json(path.read_text()) == first  # rewritten, valid again
    assert not list(path.parent.glob(".*"))  # no temporary file left behind

    # a changed digit is still valid JSON: the SHA-256 beside the file catches it
    text = path.read_text()
    score = repr(first.splits["test"].scores["tfidf_lr"])
    assert score in text
    path.write_text(text.replace(score, "0.999", 1))
    with pytest.warns(UserWarning, match="SHA-256 differs"):
        fourth = compute_baselines(task, cache_dir=tmp_path, options=FAST)
    assert not fourth.from_cache and fourth == first


def test_json_round_trip_and_verdicts(tmp_path):
    b = compute_baselines(keyword_task(), cache_dir=tmp_path, options=FAST)
    again = Baselines.from_json(b.to_json())
    assert again == b
    assert again.splits["test"].ci["majority"] == b.splits["test"].ci["majority"]
    # teacher below/at the lexical baseline (1.0) is flagged, with the numbers
    text = verdict(0.9, b)
    assert text is not None and text.startswith(TEACHER_FLAG) and "0.900 <= " in text
    assert verdict(1.0, b) is not None
    # a student at the majority class (0.4 on test), or within the margin, is flagged
    assert STUDENT_FLAG in verdict(0.4, b, role="student")
    assert verdict(0.405, b, role="student") is not None
    assert verdict(0.5, b, role="student") is None
    with pytest.raises(ValueError):
        verdict(0.5, b, split="train")
    rows = b.table("test")
    # the best constant on validation is the majority class "A" here: not listed twice
    assert b.constant_label == "A" and b.splits["test"].constant == b.splits["test"].majority
    assert [r[0] for r in rows][:2] == ["majority class", "stratified random"]


def test_teacher_above_lexical_is_not_flagged(tmp_path):
    task = keyword_task(n_train=150, n_eval=120, random_labels=True, seed=3)
    b = compute_baselines(task, cache_dir=tmp_path, options=FAST)
    assert verdict(b.lexical_score("test") + 0.05, b) is None


def _with(task, split, **cols):
    rows = {s: dict(r) for s, r in task.rows.items()}
    rows[split] = {**rows[split], **cols}
    return FakeTask(task.name, task.labels, rows, pair=task.is_pair, headline=task.headline_metric)


def test_errors_name_what_where_fix(tmp_path):
    base = keyword_task()
    one_label = _with(base, "train", label=[0] * 60)
    with pytest.raises(KdkitError, match="1 distinct label") as e:
        compute_baselines(one_label, cache_dir=tmp_path, options=FAST)
    assert e.value.fix and e.value.where == "task 'keyword'"

    small = _with(
        base,
        "validation",
        text=base.rows["validation"]["text"][:5],
        label=base.rows["validation"]["label"][:5],
    )
    with pytest.raises(KdkitError, match="5 rows, too few"):
        compute_baselines(small, cache_dir=tmp_path, options=FAST)

    labels = [y if y != 2 else 1 for y in base.rows["train"]["label"]]
    unseen = _with(base, "train", label=labels)
    with pytest.raises(KdkitError, match="train never shows: 'C' \\(9 rows\\)"):
        compute_baselines(unseen, cache_dir=tmp_path, options=FAST)

    out_of_range = _with(base, "test", label=[5] * 30)
    with pytest.raises(KdkitError, match="outside the task's 3 labels"):
        compute_baselines(out_of_range, cache_dir=tmp_path, options=FAST)

    no_pair = pair_task()
    for r in no_pair.rows.values():
        r.pop("text_pair")
    with pytest.raises(KdkitError, match="text_pair"):
        compute_baselines(no_pair, cache_dir=tmp_path, options=FAST)

    with pytest.raises(KdkitError, match="unknown split"):
        compute_baselines(base, splits=["dev"], cache_dir=tmp_path, options=FAST)


def test_baselines_logits_go_through_the_tasks_evaluate(tmp_path):
    """The scores are the task's own metric: a task whose evaluate inverts accuracy sees it."""

    class Inverted(FakeTask):
        def evaluate(self, logits, labels):
            acc = float((logits.argmax(-1) == labels).float().mean())
            return {"top1": 1.0 - acc}

    task = keyword_task()
    inv = Inverted(task.name + "-inv", task.labels, task.rows)
    b = compute_baselines(inv, cache_dir=tmp_path, options=FAST)
    assert b.splits["test"].majority == pytest.approx(1 - 12 / 30)
    assert torch.isfinite(torch.tensor(b.splits["test"].lexical["tfidf_lr"]))


def test_cache_verify_and_clear_know_cached_baselines(tmp_path, capsys):
    from kdkit.cli import main

    task = keyword_task()
    first = compute_baselines(task, cache_dir=tmp_path, options=FAST)
    path = cache_path(task, ("validation", "test"), FAST, tmp_path)
    assert main(["cache", "--dir", str(tmp_path), "verify"]) == 0
    assert f"ok        baselines        {path.stem}" in capsys.readouterr().out
    score = repr(first.splits["test"].scores["tfidf_lr"])
    path.write_text(path.read_text().replace(score, "0.999", 1))
    assert main(["cache", "--dir", str(tmp_path), "verify"]) == 2
    captured = capsys.readouterr()
    assert "SHA-256 differs" in captured.out and f"kdkit cache clear {path.stem}" in captured.err
    assert main(["cache", "--dir", str(tmp_path), "clear", path.stem]) == 0
    assert not path.exists() and not path.with_name(path.name + ".sha256").exists()


def test_lexical_grid_in_worker_processes_equals_one_process(tmp_path):
    """The chains fitted in spawned workers choose the same point and give the same logits."""
    from kdkit.baselines.lexical import fit_tfidf_lr

    task = keyword_task(n_train=150, n_eval=120, random_labels=True, seed=3)
    rows = {s: dict(r) for s, r in task.rows.items()}
    grid = {**FAST.grid(), "class_weight": (None, "balanced")}  # 2 chains x 2 C

    def fit(workers):
        return fit_tfidf_lr(
            rows["train"],
            rows["validation"],
            num_classes=3,
            is_pair=False,
            headline=lambda lg, y: float((lg.argmax(-1) == y).float().mean()),
            grid=grid,
            seed=0,
            workers=workers,
        )

    one, two = fit(1), fit(2)
    assert (
        one.params == two.params and one.val_score == two.val_score and one.tried == 4 == two.tried
    )
    assert torch.equal(one.logits(rows["test"]), two.logits(rows["test"]))
    # the chosen point is the best validation score of the grid (random labels: not 1.0)
    assert 0.2 < one.val_score < 0.7


def test_baseline_workers_env_is_checked(monkeypatch):
    from kdkit.baselines.compute import default_workers

    monkeypatch.setenv("KDKIT_BASELINE_WORKERS", "3")
    assert default_workers() == 3
    monkeypatch.setenv("KDKIT_BASELINE_WORKERS", "two")
    with pytest.raises(KdkitError, match="KDKIT_BASELINE_WORKERS='two' is not a whole number"):
        default_workers()


def test_a_failing_worker_process_falls_back_to_this_process(monkeypatch):
    import sys

    from kdkit.baselines.lexical import fit_tfidf_lr

    task = keyword_task()
    rows = {s: dict(r) for s, r in task.rows.items()}
    kwargs = dict(
        num_classes=3,
        is_pair=False,
        headline=lambda lg, y: float((lg.argmax(-1) == y).float().mean()),
        grid={**FAST.grid(), "class_weight": (None, "balanced")},
        seed=0,
    )
    expected = fit_tfidf_lr(rows["train"], rows["validation"], workers=1, **kwargs)
    monkeypatch.setattr(sys, "executable", "/bin/false")  # every worker exits 1
    with pytest.warns(UserWarning, match="in 2 processes failed .* fitting it in this process"):
        got = fit_tfidf_lr(rows["train"], rows["validation"], workers=2, **kwargs)
    assert got.params == expected.params and got.val_score == expected.val_score == 1.0
