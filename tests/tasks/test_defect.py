"""Defect detection: Devign fixtures, synthetic bugs in real functions, the builder and task."""

from __future__ import annotations

import ast
import difflib
import json
import random

import pytest
import torch

from kdkit.data.pyfuncs import extract_functions
from kdkit.errors import KdkitError
from kdkit.plugins.tasks.defect import DefectOptions, DefectTask
from kdkit.plugins.tasks.defect.builder import DefectBuildOptions, build
from kdkit.plugins.tasks.mutations import candidate_edits, mutate, parses

SRC = """def area(w, h, scale):
    size = w * h
    if size > 100 and scale is not None:
        size = size - scale
    return size / scale
"""


def one_function(src: str):
    (fn,) = extract_functions(src, ast.parse(src))
    return fn


def test_candidate_edits_by_kind():
    fn = one_function(SRC)
    edits = candidate_edits(fn, random.Random(0))
    swaps = {(fn.text[e.start : e.end], e.replacement) for e in edits["swapped_operands"]}
    assert swaps == {
        ("size > 100", "100 > size"),
        ("size - scale", "scale - size"),
        ("size / scale", "scale / size"),
    }
    ops = {fn.text[e.start : e.end] for e in edits["wrong_operator"]}
    assert ops == {"*", ">", "and", "is not", "-", "/"}
    misuse = edits["variable_misuse"]
    assert misuse and all(fn.text[e.start : e.end] in {"w", "h", "scale", "size"} for e in misuse)
    assert all(e.replacement != fn.text[e.start : e.end] for e in misuse)


def test_mutants_differ_in_one_span_and_parse():
    fn = one_function(SRC)
    rng = random.Random(1)
    for _ in range(30):
        edit = mutate(fn, rng)
        mutated = edit.apply(fn.text)
        assert mutated != fn.text and parses(mutated)
        changed = [
            d for d in difflib.ndiff(fn.text.splitlines(), mutated.splitlines()) if d[0] in "+-"
        ]
        assert len(changed) == 2  # exactly one line changed


def test_no_site_gives_none():
    assert mutate(one_function("def f():\n    return 1\n"), random.Random(0)) is None


def test_devign_fixture_loads(fixtures):
    task = DefectTask(DefectOptions(data_dir=str(fixtures / "devign")))
    dd = task.load()
    assert {s: len(dd[s]) for s in dd} == {"train": 5, "validation": 2, "test": 3}
    assert dd["train"]["label"] == [0, 1, 0, 1, 1]
    assert sum(dd["test"]["label"]) == 1
    assert task.labels == ["correct", "defective"] and task.headline_metric == "accuracy"


def test_defect_builder_is_balanced_paired_and_split_by_file(defect_build):
    out, report = defect_build
    rows = {
        s: [json.loads(x) for x in (out / f"{s}.jsonl").open()] for s in ("train", "valid", "test")
    }
    for items in rows.values():
        assert sum(r["target"] for r in items) * 2 == len(items)  # balanced
        for correct, buggy in zip(items[::2], items[1::2]):  # written as (correct, buggy) pairs
            assert correct["target"] == 0 and buggy["target"] == 1
            assert correct["info"] == buggy["info"] and buggy["bug_kind"] in (
                "variable_misuse",
                "swapped_operands",
                "wrong_operator",
            )
            assert correct["func"] != buggy["func"] and parses(buggy["func"])
    files = {s: {r["info"].split()[0] for r in items} for s, items in rows.items()}
    assert not (files["train"] & files["test"]) and not (files["valid"] & files["test"])
    kinds = {k for s in report.extra["bug_kinds"].values() for k in s}
    assert kinds == {"variable_misuse", "swapped_operands", "wrong_operator"}
    assert len({r["idx"] for items in rows.values() for r in items}) == sum(report.sizes.values())


def test_built_defect_set_loads_through_the_task(defect_build):
    out, report = defect_build
    task = DefectTask(DefectOptions(data_dir=str(out), max_eval=10))
    dd = task.load()
    assert len(dd["train"]) == report.sizes["train"] and len(dd["test"]) == 10
    m = task.evaluate(
        torch.zeros(4, 2).index_fill_(1, torch.tensor([1]), 1.0), torch.tensor([1, 1, 0, 0])
    )
    assert m == pytest.approx({"accuracy": 0.5, "precision": 0.5, "recall": 1.0, "f1": 2 / 3})


def test_unknown_kind_is_a_user_error(tmp_path):
    from kdkit.data.build import validate_options

    with pytest.raises(KdkitError, match="unknown mutation"):
        validate_options(DefectBuildOptions, {"files": [], "kinds": ["off_by_one"]}, where="test")
    # A run file's kinds reach the builder's validation before anything is built.
    with pytest.raises(KdkitError, match="unknown mutation") as err:
        DefectTask(DefectOptions(kinds=["off_by_one"], source=[str(tmp_path)])).load()
    assert err.value.where == "task options"
    assert DefectBuildOptions(kinds=["wrong_operator,swapped_operands"]).kinds == [
        "wrong_operator",
        "swapped_operands",
    ]  # a flag's comma-separated value


def test_max_lines_reaches_the_builder_and_only_then_the_cache_key():
    from kdkit.plugins.tasks.clone import CloneOptions, CloneTask

    plain, short = DefectTask(DefectOptions()), DefectTask(DefectOptions(max_lines=12))
    assert "max_lines" not in plain.offline_overrides()  # old caches stay valid
    assert short.offline_overrides()["max_lines"] == 12
    assert short.offline_build_options().max_lines == 12
    assert plain.offline_build_options().max_lines == 40  # the builder's default
    assert plain.built_dir() != short.built_dir()
    clone = CloneTask(CloneOptions(max_lines=10, near_miss_share=0.3))
    assert clone.offline_overrides() == {"near_miss_share": 0.3, "max_lines": 10}


def test_max_lines_bounds_the_built_functions(tmp_path):
    from kdkit.data.corpus import stdlib_sample

    files = stdlib_sample(("shutil.py", "pathlib.py", "tarfile.py", "inspect.py"))
    build(tmp_path, DefectBuildOptions(files=files, max_lines=8, min_examples=10), quiet=True)
    rows = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert rows and max(len(r["func"].splitlines()) for r in rows) <= 8


def test_offline_task_options_are_declared_by_the_builders_model():
    from pydantic import ValidationError

    from kdkit.plugins.tasks.clone import CloneOptions
    from kdkit.plugins.tasks.clone.builder import CloneBuildOptions

    kinds = DefectBuildOptions.model_fields["kinds"].description
    assert DefectOptions.model_fields["kinds"].description == f"offline build only: {kinds}"
    assert DefectOptions().kinds == DefectBuildOptions().kinds  # the builder's default
    assert CloneOptions().near_miss_share == CloneBuildOptions().near_miss_share == 0.7
    with pytest.raises(ValidationError):
        DefectOptions(max_lines=2)  # the builder's constraint (ge=3) holds in a run file too
    with pytest.raises(ValidationError):
        CloneOptions(near_miss_share=1.5)
    assert "(default 40)" in DefectOptions.model_fields["max_lines"].description


def test_no_text_is_written_twice_and_the_fix_keys_the_cache(tmp_path):
    from kdkit.data.corpus import stdlib_sample
    from kdkit.data.pyfuncs import normalise_code

    # shutil.py twice under another name: every function of it repeats in a second file
    files = stdlib_sample(("shutil.py", "pathlib.py", "tarfile.py", "inspect.py"))
    copy = tmp_path / "src" / "shutil_copy.py"
    copy.parent.mkdir()
    copy.write_text(files[0].read_text())
    report = build(
        tmp_path / "out", DefectBuildOptions(files=[*files, copy], min_examples=10), quiet=True
    )
    texts = [
        normalise_code(json.loads(line)["func"])
        for s in ("train", "valid", "test")
        for line in (tmp_path / "out" / f"{s}.jsonl").read_text().splitlines()
    ]
    assert len(texts) == len(set(texts)) == sum(report.sizes.values())
    assert report.skipped["duplicate_text"] >= 20  # shutil.py has dozens of mutable functions

    class OldBuilder(DefectTask):
        build_version = 1

    assert OldBuilder(DefectOptions()).built_dir() != DefectTask(DefectOptions()).built_dir()
