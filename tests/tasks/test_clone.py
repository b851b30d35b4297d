"""Clone detection: BigCloneBench and pair-JSONL fixtures, rewrites that keep behaviour,
near misses that change it, and the builder's pairs and Jaccard baseline."""

from __future__ import annotations

import json
import random

import pytest
import torch

from kdkit.data.pyfuncs import extract_functions, normalise_code
from kdkit.errors import KdkitError
from kdkit.plugins.tasks.clone import CloneOptions, CloneTask
from kdkit.plugins.tasks.clone.builder import token_jaccard
from kdkit.plugins.tasks.clone.rewrites import rewrite
from kdkit.plugins.tasks.mutations import mutate

SRC = '''def summarize(values, limit):
    """Sum and list the small values."""
    small = []
    for v in values:
        if v < limit:
            small.append(v * 2)
    total = 0
    count = 0
    for s in small:
        total = total + s
    doubled = [x - 1 for x in small if x > 2]
    if not doubled:
        return total, None
    else:
        return total, doubled
'''
INPUTS = [([1, 2, 3, 10, 20], 5), ([], 3), ([5, 6, 7], 100), ([0, 1], 1), ([4, 4, 9], 9)]


def run(text: str):
    scope: dict = {}
    exec(text, scope)  # our own hand-written function and its rewrites
    fn = next(v for k, v in scope.items() if k == "summarize")
    return [fn(list(a), b) for a, b in INPUTS]


def test_rewrites_preserve_behaviour_and_change_tokens():
    expected = run(SRC)
    applied_any: set[str] = set()
    for seed in range(25):
        text, applied = rewrite(SRC, random.Random(seed))
        assert run(text) == expected, text
        applied_any |= {k for k, v in applied.items() if v}
    assert applied_any == {
        "rename",
        "reorder",
        "loop_comprehension",
        "flip_comparison",
        "swap_branches",
        "drop_docstring",
    }


def test_near_miss_mutants_change_behaviour_mostly():
    import ast

    (fn,) = extract_functions(SRC, ast.parse(SRC))
    rng = random.Random(0)
    changed = 0
    for _ in range(20):
        mutant = mutate(fn, rng).apply(fn.text)
        try:
            changed += run(mutant) != run(SRC)
        except Exception:  # a mutant may crash: that is a behaviour change too
            changed += 1
    assert changed >= 15  # a few mutants can be equivalent on these inputs


def test_token_jaccard():
    assert token_jaccard("a = b + 1", "a = b + 1") == 1.0
    assert token_jaccard("x = y", "p = q") == pytest.approx(1 / 5)  # {=} over {x,y,p,q,=}


def test_bigclonebench_fixture_loads(fixtures):
    task = CloneTask(CloneOptions(data_dir=str(fixtures / "bigclonebench")))
    dd = task.load()
    assert {s: len(dd[s]) for s in dd} == {"train": 8, "validation": 3, "test": 2}
    assert dd["train"]["label"] == [1, 1, 0, 0, 0, 0, 1, 0]
    assert dd["train"][0]["text"].startswith("int sum(") and dd["train"][0]["text_pair"].startswith(
        "int total("
    )
    assert task.is_pair and task.headline_metric == "f1"


def test_train_fraction_is_a_seeded_subsample(fixtures):
    def train(**kw):
        return CloneTask(CloneOptions(data_dir=str(fixtures / "bigclonebench"), **kw)).load()[
            "train"
        ]

    half = train(train_fraction=0.5)
    assert len(half) == 4 and half["label"] == train(train_fraction=0.5)["label"]
    other = train(train_fraction=0.5, sample_seed=3)
    full = list(zip(train()["text"], train()["text_pair"]))
    assert set(zip(half["text"], half["text_pair"])) <= set(full)
    assert len(other) == 4


def test_pair_jsonl_fixture_loads(fixtures):
    dd = CloneTask(CloneOptions(data_dir=str(fixtures / "pairs"))).load()
    assert {s: len(dd[s]) for s in dd} == {"train": 3, "validation": 1, "test": 2}
    assert dd["train"]["label"] == [1, 0, 1]


def test_missing_idx_is_reported_with_file_and_line(tmp_path, fixtures):
    import shutil

    shutil.copytree(fixtures / "bigclonebench", tmp_path / "bcb")
    (tmp_path / "bcb" / "test.txt").write_text("10\t99\t1\n")
    with pytest.raises(KdkitError) as err:
        CloneTask(CloneOptions(data_dir=str(tmp_path / "bcb"))).load()
    assert "test.txt:1" in err.value.render() and "99" in err.value.what


def test_clone_builder_pairs_and_jaccard_baseline(clone_build):
    out, report = clone_build
    code = {r["idx"]: r["func"] for r in map(json.loads, (out / "data.jsonl").open())}
    kinds = report.extra["pair_kinds"]
    for split, name in (("train", "train"), ("validation", "valid"), ("test", "test")):
        lines = [line.split("\t") for line in (out / f"{name}.txt").read_text().splitlines()]
        assert len(lines) == report.sizes[split]
        labels = [int(y) for _, _, y in lines]
        assert abs(sum(labels) * 2 - len(labels)) <= len(labels) * 0.05  # about balanced
        assert all(a in code and b in code and a != b for a, b, _ in lines)
        assert kinds[split]["positive"] == sum(labels)
        assert (
            any(k.startswith("near_miss") for k in kinds[split]) and kinds[split]["other_function"]
        )
    # Anchors of different splits never share a normalised text.
    anchors = {}
    for name in ("train", "valid", "test"):
        anchors[name] = {
            normalise_code(code[line.split("\t")[0]])
            for line in (out / f"{name}.txt").read_text().splitlines()
        }
    assert not (anchors["train"] & anchors["test"]) and not (anchors["valid"] & anchors["test"])
    auc = report.extra["jaccard_auc"]["test"]
    assert 0.5 <= auc <= 0.85  # overlap alone is a weak baseline (full stdlib: about 0.75)


def test_built_clone_set_loads_through_the_task(clone_build):
    out, report = clone_build
    task = CloneTask(CloneOptions(data_dir=str(out), train_fraction=0.1))
    dd = task.load()
    assert len(dd["train"]) == round(report.sizes["train"] * 0.1)
    assert len(dd["test"]) == report.sizes["test"]
    logits = torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    m = task.evaluate(logits, torch.tensor([1, 0, 1, 0]))
    assert m == pytest.approx({"accuracy": 0.5, "precision": 0.5, "recall": 0.5, "f1": 0.5})
