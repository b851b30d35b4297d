"""Exception classification: CuBERT-format fixtures, the offline builder on real stdlib code."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from kdkit.data.corpus import read_corpus, stdlib_sample
from kdkit.data.pyfuncs import normalise_code
from kdkit.errors import KdkitError
from kdkit.plugins.tasks.exception import ExceptionOptions, ExceptionTask
from kdkit.plugins.tasks.exception import builder as exception
from kdkit.plugins.tasks.exception.builder import ExceptionBuildOptions


def make(**options) -> ExceptionTask:
    return ExceptionTask(ExceptionOptions(**options))


def test_cubert_fixture_loads_with_sizes_and_labels(fixtures):
    task = make(data_dir=str(fixtures / "cubert"))
    dd = task.load()
    # 7 train rows, one (ZeroDivisionError) outside CuBERT's 20 labels -> dropped and counted.
    assert {s: len(dd[s]) for s in dd} == {"train": 6, "validation": 3, "test": 3}
    assert task.dropped == {"train_label_not_in_set": 1}
    assert len(task.labels) == 20 and task.labels[0] == "ValueError"
    names = Counter(task.labels[i] for i in dd["train"]["label"])
    assert names == {
        "ValueError": 2,
        "OSError": 1,
        "KeyError": 1,
        "IndexError": 1,
        "AttributeError": 1,
    }
    assert all("__HOLE__" in t for t in dd["test"]["text"])
    assert task.headline_metric == "top1" and not task.is_pair


def test_explicit_labels_and_top_k(fixtures):
    task = make(data_dir=str(fixtures / "cubert"), labels=["ValueError", "OSError"])
    assert [len(task.load()[s]) for s in ("train", "validation", "test")] == [3, 1, 1]
    assert task.load()["train"]["label"] == [1, 0, 0]  # OSError, ValueError, ValueError
    with pytest.raises(KdkitError, match="no rows in split"):
        make(data_dir=str(fixtures / "cubert"), labels=["ZeroDivisionError", "KeyError"]).load()
    top = make(data_dir=str(fixtures / "cubert"), labels="top-2")
    top.load()
    assert top.labels == ["ValueError", "AttributeError"]  # 2 ValueError; ties broken by name
    assert top.fingerprint() != task.fingerprint()


def test_bad_label_option_is_rejected():
    with pytest.raises(ValueError, match="top-K"):
        ExceptionOptions(labels="most")
    with pytest.raises(ValueError):
        ExceptionOptions(lables="cubert")  # extra options are forbidden


def test_missing_folder_names_the_path_and_the_build_command(tmp_path):
    with pytest.raises(KdkitError) as err:
        make(data_dir=str(tmp_path / "nope")).load()
    assert str(tmp_path / "nope") in err.value.render()
    assert "kdkit data build exception" in err.value.fix


def test_arrow_cache_is_reused_and_fingerprint_is_stable(fixtures, isolated_cache):
    a = make(data_dir=str(fixtures / "cubert"))
    a.load()
    cached = list((isolated_cache / "datasets").iterdir())
    assert len(cached) == 1 and a.fingerprint() in cached[0].name
    b = make(data_dir=str(fixtures / "cubert"))
    assert b.fingerprint() == a.fingerprint()
    assert len(list((isolated_cache / "datasets").iterdir())) == 1
    c = make(data_dir=str(fixtures / "cubert"), max_train=2)
    assert c.fingerprint() != a.fingerprint() and len(c.load()["train"]) == 2


def test_evaluate_reports_top1_top3_macro_f1(fixtures):
    task = make(data_dir=str(fixtures / "cubert"))
    labels = torch.tensor([0, 1, 2])
    logits = torch.zeros(3, 20)
    logits[0, 0] = 3
    logits[1, 5], logits[1, 1] = 3, 2  # label 1 is second -> top3 hit, top1 miss
    logits[2, 7] = 3
    m = task.evaluate(logits, labels)
    assert m["top1"] == pytest.approx(1 / 3)
    assert m["top3"] >= 2 / 3
    assert 0 <= m["macro_f1"] <= 1


def test_builder_on_stdlib_slice(exception_build):
    out, report = exception_build
    sizes = report.sizes
    assert sum(sizes.values()) >= 300 and min(sizes.values()) > 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["sizes"] == sizes
    assert set(stats["labels"]["train"]) <= set(exception.CUBERT_LABELS)
    rows = {
        s: [json.loads(line) for line in (out / f"{s}.jsonl").open()]
        for s in ("train", "valid", "test")
    }
    for split, items in rows.items():
        assert len(items) == sizes["validation" if split == "valid" else split]
        for r in items:
            assert r["function"].count("__HOLE__") == 1 and r["label"] in exception.CUBERT_LABELS
    # No normalised function text is shared between splits, and a file stays in one split.
    keys = {s: {normalise_code(r["function"]) for r in items} for s, items in rows.items()}
    assert not (keys["train"] & keys["valid"]) and not (keys["train"] & keys["test"])
    assert not (keys["valid"] & keys["test"])
    files = {s: {r["info"].split()[0] for r in items} for s, items in rows.items()}
    assert not (files["train"] & files["test"]) and not (files["train"] & files["valid"])


def test_built_set_loads_through_the_task(exception_build):
    out, report = exception_build
    task = make(data_dir=str(out))
    dd = task.load()
    assert {s: len(dd[s]) for s in dd} == report.sizes
    assert task.dropped == {}


def test_hole_replaces_exactly_the_type(tmp_path):
    src = tmp_path / "m.py"
    src.write_text(
        "import urllib.error\n\n"
        "def fetch(u):\n"
        "    try:\n"
        "        return u.open()\n"
        "    except urllib.error.HTTPError as e:  # dotted type\n"
        "        return e\n"
        "    except (ValueError, TypeError):\n"  # a tuple: no single label
        "        return None\n"
    )
    corpus = read_corpus(files=[src])
    ((sf, f),) = corpus.functions
    found = exception.holes(f)
    assert [(lab, f.text[s:e]) for lab, s, e, _ in found] == [
        ("HTTPError", "urllib.error.HTTPError")
    ]


def test_window_crops_around_the_hole():
    text = "\n".join(f"line{i}" for i in range(20)) + "\n"
    assert exception.crop(text, 10, 2) == "line8\nline9\nline10\nline11\nline12\n"
    assert exception.crop(text, 0, 1) == "line0\nline1\n"
    assert exception.crop(text, 5, None) == text


def test_too_small_build_is_an_error_not_an_empty_file(tmp_path):
    with pytest.raises(KdkitError, match="at least"):
        exception.build(
            tmp_path / "out",
            ExceptionBuildOptions(files=stdlib_sample(["ntpath.py"]), min_examples=1000),
            quiet=True,
        )
    assert not (tmp_path / "out" / "train.jsonl").exists()


def test_source_option_builds_once_into_the_cache(isolated_cache, monkeypatch, tmp_path):
    # A directory source with a copy of a few stdlib modules stands in for `stdlib` (fast).
    import shutil

    src = tmp_path / "src"
    src.mkdir()
    for p in stdlib_sample():
        shutil.copy(p, src / p.name)
    calls = []
    real = exception.build

    def counting(out_dir, options, *, quiet=False):
        calls.append(options)
        return real(out_dir, options.model_copy(update={"min_examples": 20}), quiet=quiet)

    # The task builds through its contract (ExceptionTask.build_offline), not a name lookup.
    monkeypatch.setattr(ExceptionTask, "build_offline", staticmethod(counting))
    first = make(source=[str(src)])
    n = len(first.load()["train"])
    second = make(source=[str(src)])
    assert len(second.load()["train"]) == n and second.fingerprint() == first.fingerprint()
    assert len(calls) == 1 and calls[0].sources == [str(src)] and calls[0].labels == "cubert"
    assert len(list((isolated_cache / "built").iterdir())) == 1
