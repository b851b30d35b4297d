"""Offline builds that carry signal (issue 18): label sets without catch-alls, token windows,
stratified leakage-free splits, label mixes in the stats, defect pairs kept whole by
subsampling, distribution sources recorded with their versions."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from kdkit.data.build import label_mix, split_by_group
from kdkit.data.corpus import stdlib_sample
from kdkit.data.pyfuncs import normalise_code
from kdkit.data.sources import describe_sources, resolve_sources
from kdkit.errors import KdkitError
from kdkit.plugins.tasks.defect import DefectOptions, DefectTask, subsample_pairs
from kdkit.plugins.tasks.exception import ExceptionOptions, ExceptionTask
from kdkit.plugins.tasks.exception.builder import (
    CATCH_ALLS,
    CUBERT_LABELS,
    HOLE,
    ExceptionBuildOptions,
    build,
    resolve_labels,
    token_window,
)

TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+|[^\sA-Za-z0-9_]")


def rows_of(out):
    return {
        s: [json.loads(line) for line in (out / f"{s}.jsonl").open()]
        for s in ("train", "valid", "test")
    }


# -- label sets ---------------------------------------------------------------------------------


def test_cubert_is_the_default_label_set_and_has_no_catch_all():
    assert ExceptionBuildOptions().labels == "cubert" and ExceptionOptions().labels == "cubert"
    assert len(CUBERT_LABELS) == 20 and not set(CATCH_ALLS) & set(CUBERT_LABELS)
    found = Counter(
        {"Exception": 50, "ValueError": 9, "BaseException": 8, "KeyError": 7, "OSError": 1}
    )
    assert resolve_labels("top-3", found) == ["ValueError", "KeyError", "OSError"]
    assert resolve_labels("top-3", found, keep_catch_alls=True) == [
        "Exception",
        "ValueError",
        "BaseException",
    ]


def handlers_dir(root, per_file, files=12):
    """``files`` modules, each with one function per ``(type, count)`` of ``per_file``."""
    root.mkdir()
    code = "def g{n}_{i}(x):\n    try:\n        return x.y{n}_{i}\n    except {e}:\n        return {i}\n"
    for n in range(files):
        funcs = [code.format(n=n, i=f"{e}{k}", e=e) for e, c in per_file for k in range(c)]
        (root / f"m{n}.py").write_text("\n".join(funcs))
    return root


def test_top_k_build_leaves_out_catch_alls_unless_asked(tmp_path):
    src = handlers_dir(tmp_path / "src", [("Exception", 3), ("ValueError", 2), ("KeyError", 1)])
    plain = build(
        tmp_path / "a",
        ExceptionBuildOptions(sources=[str(src)], labels="top-2", min_examples=20),
        quiet=True,
    )
    kept = build(
        tmp_path / "b",
        ExceptionBuildOptions(
            sources=[str(src)], labels="top-2", min_examples=20, keep_catch_alls=True
        ),
        quiet=True,
    )
    assert plain.options["labels"] == ["ValueError", "KeyError"]
    assert kept.options["labels"] == ["Exception", "ValueError"]
    assert plain.sizes == {"train": 3 * 8, "validation": 3 * 2, "test": 3 * 2}  # 15 % of 12 files
    labels_seen = {r["label"] for items in rows_of(tmp_path / "a").values() for r in items}
    assert labels_seen == {"ValueError", "KeyError"}


def test_explicit_labels_missing_from_a_split_are_an_error_naming_the_fix(tmp_path):
    files = stdlib_sample(("shutil.py", "pathlib.py", "os.py"))
    with pytest.raises(KdkitError) as err:
        build(
            tmp_path,
            ExceptionBuildOptions(
                files=files, labels="OSError,KeyError,NotADirectoryError", min_examples=5
            ),
            quiet=True,
        )
    assert "too few rows in some split" in str(err.value) and "--labels" in str(err.value)
    assert not (tmp_path / "train.jsonl").exists()


def test_rare_labels_are_dropped_from_cubert_and_recorded(exception_build):
    out, report = exception_build
    stats = json.loads((out / "stats.json").read_text())
    kept = stats["options"]["labels"]
    assert set(kept) <= set(CUBERT_LABELS)
    for lab in kept:  # every kept label is in every split
        assert all(stats["labels"][s].get(lab, 0) >= 1 for s in ("train", "validation", "test"))
    for lab, per_split in stats["labels_dropped"].items():
        assert min(per_split.values()) == 0 and lab not in kept
    assert set(stats["labels_absent"]) <= set(stats["labels_dropped"])
    assert "DoesNotExist" in stats["labels_absent"]  # a Django type: never in the stdlib


# -- splits -------------------------------------------------------------------------------------


def test_stratified_split_matches_label_mix_and_keeps_groups_whole():
    # 60 files of one label each (labels a/b/c in 6:3:1), sizes 1..4: a size-only split is free
    # to put all 'c' files in train; the stratified one must spread every label.
    items = []
    for f in range(60):
        label = "a" if f % 10 < 6 else "b" if f % 10 < 9 else "c"
        items += [(f"file{f}", f"key{f}-{i}", label) for i in range(1 + f % 4)]
    fractions = (0.7, 0.15, 0.15)
    strat = split_by_group(items, lambda i: i[0], lambda i: i[1], 0, fractions, lambda i: i[2])
    counts = {s: Counter(i[2] for i in xs) for s, xs in strat.splits.items()}
    total = Counter(i[2] for i in items)
    for s, share in zip(("train", "validation", "test"), fractions):
        for lab, n in total.items():
            assert abs(counts[s][lab] - share * n) <= 4, (s, lab, counts)
    where = {}
    for s, xs in strat.splits.items():
        for i in xs:
            assert where.setdefault(i[0], s) == s  # no file in two splits
    mix = label_mix({s: dict(c) for s, c in counts.items()})
    assert mix["tv_validation_test"] < 0.1
    assert sum(mix["shares"]["test"].values()) == pytest.approx(1, abs=1e-3)


def test_stats_report_label_mix_and_exception_defaults(exception_build):
    out, report = exception_build
    stats = json.loads((out / "stats.json").read_text())
    assert stats["options"]["stratify"] is True and stats["options"]["eval_share"] == 0.15
    sizes = stats["sizes"]
    total = sum(sizes.values())
    assert 0.1 < sizes["validation"] / total < 0.2 and 0.1 < sizes["test"] / total < 0.2
    mix = stats["label_mix"]
    for split in ("train", "validation", "test"):
        n = sizes[split]
        assert mix["shares"][split] == {
            lab: round(c / n, 4) for lab, c in stats["labels"][split].items()
        }
    assert stats["tv_validation_test"] == mix["tv_validation_test"] < 0.25
    assert "tv_validation_test" in report.render()


def test_no_file_and_no_near_duplicate_in_two_splits(exception_build):
    out, _ = exception_build
    rows = rows_of(out)
    files = {s: {r["info"].split()[0] for r in xs} for s, xs in rows.items()}
    keys = {s: {normalise_code(r["function"]) for r in xs} for s, xs in rows.items()}
    for a, b in (("train", "valid"), ("train", "test"), ("valid", "test")):
        assert not files[a] & files[b] and not keys[a] & keys[b]


def test_near_duplicate_functions_of_two_files_stay_in_one_split(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    body = "def f{n}(path):\n    try:\n        return open(path)\n    except {exc}:\n        return None\n"
    for n in range(30):
        exc = ("OSError", "ValueError", "KeyError")[n % 3]
        # every file also holds one copy of the same function, laid out differently
        copy = f"def shared(x):\n    try:\n        return x[ 0 ]\n    except{' ' * (1 + n % 3)}IndexError :  # {n}\n        return None\n"
        (src / f"m{n}.py").write_text(body.format(n=n, exc=exc) + "\n" + copy)
    report = build(
        tmp_path / "out",
        ExceptionBuildOptions(
            sources=[str(src)], labels="top-4", min_examples=10, min_label_rows=0
        ),
        quiet=True,
    )
    rows = rows_of(tmp_path / "out")
    shared = [s for s, xs in rows.items() for r in xs if "shared" in r["info"]]
    assert len(shared) == 1  # kept once (in one split), the 29 copies dropped
    assert report.skipped["near_duplicate"] == 29


# -- token window -------------------------------------------------------------------------------


def test_token_window_cuts_tokens_around_the_hole():
    text = " ".join(f"t{i}" for i in range(100)).replace("t50", HOLE)
    cut = token_window(text, text.index(HOLE), 20, 0.75)
    toks = cut.split()
    assert len(toks) == 20 and toks.index(HOLE) == 15 and toks[0] == "t35"
    start = token_window(text.replace(HOLE, "x").replace("t2 ", HOLE + " ", 1), 6, 20, 0.75)
    assert start.split()[0] == "t0" and len(start.split()) == 20  # shifted inward at the start
    assert token_window("a = b", 0, 20, 0.75) == "a = b"


def test_window_tokens_build_keeps_the_hole_within_n_tokens(tmp_path):
    files = stdlib_sample(("shutil.py", "pathlib.py", "os.py", "tarfile.py", "inspect.py"))
    build(
        tmp_path,
        ExceptionBuildOptions(files=files, window_tokens=40, min_examples=20, labels="top-5"),
        quiet=True,
    )
    rows = [r for xs in rows_of(tmp_path).values() for r in xs]
    assert rows and all(len(TOKEN.findall(r["function"])) <= 40 for r in rows)
    assert all(r["function"].count(HOLE) == 1 for r in rows)
    with pytest.raises(ValueError, match="not both"):
        ExceptionBuildOptions(window=3, window_tokens=64)


# -- defect pairs -------------------------------------------------------------------------------


def test_subsample_pairs_keeps_whole_pairs_seeded():
    rows = [{"text": f"f{i // 2}", "label": i % 2, "pair": str(i // 2)} for i in range(40)]
    got = subsample_pairs(rows, 10, seed=3)
    assert len(got) == 10 and Counter(r["pair"] for r in got) == {
        p: 2 for p in {r["pair"] for r in got}
    }
    assert got == subsample_pairs(rows, 10, seed=3) and got != subsample_pairs(rows, 10, seed=4)
    assert [r["label"] for r in got] == [0, 1] * 5
    assert subsample_pairs(rows, 11, seed=3).__len__() == 10  # an odd cap never splits a pair
    assert subsample_pairs(rows, None, seed=3) is rows


def test_defect_task_subsampling_keeps_correct_and_buggy_together(defect_build):
    out, report = defect_build
    rows = rows_of(out)
    texts = {(r["func"], r["target"]): r["pair"] for xs in rows.values() for r in xs}
    task = DefectTask(DefectOptions(data_dir=str(out), max_train=40, max_eval=20))
    dd = task.load()
    assert len(dd["train"]) == 40 and len(dd["validation"]) == 20 and len(dd["test"]) == 20
    for split in ("train", "validation", "test"):
        pairs = Counter(texts[(t, y)] for t, y in zip(dd[split]["text"], dd[split]["label"]))
        assert set(pairs.values()) == {2}  # both rows of every function kept
        assert sum(dd[split]["label"]) == len(dd[split]) // 2


# -- distributions as sources -------------------------------------------------------------------


def fake_distribution(root, version):
    """An installed distribution ``fakedist`` (package ``fakepkg``) of ``version`` under root."""
    pkg = root / "fakepkg"
    pkg.mkdir(exist_ok=True)
    code = "def f{n}(x):\n    try:\n        return int(x)\n    except {e}:\n        return {n}\n"
    for n in range(12):
        (pkg / f"m{n}.py").write_text(code.format(n=n, e=("ValueError", "KeyError")[n % 2]))
    info = root / "fakedist-0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fakedist\nVersion: {version}\n")
    (info / "RECORD").write_text("".join(f"fakepkg/m{n}.py,,\n" for n in range(12)))


def test_distribution_source_records_its_version_and_keys_the_build(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    fake_distribution(tmp_path, "1.0")
    roots = resolve_sources(["dist:fakedist"])
    assert [r.label for r in roots] == ["fakedist==1.0:fakepkg"]
    desc = describe_sources(roots)[0]
    assert desc["distribution"] == "fakedist" and desc["version"] == "1.0"

    def task():
        return ExceptionTask(ExceptionOptions(source=["dist:fakedist"], labels="top-2"))

    first = task().built_dir()
    report = build(
        tmp_path / "out",
        ExceptionBuildOptions(
            sources=["dist:fakedist"], labels="top-2", min_examples=5, holdout=False
        ),  # twelve one-handler files: too few to hold some out
        quiet=True,
    )
    assert report.sources[0]["version"] == "1.0" and sum(report.sizes.values()) == 12
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["sources"][0]["source"] == "fakedist==1.0:fakepkg"
    fake_distribution(tmp_path, "1.1")  # same files, another version: another dataset key
    assert task().built_dir() != first
    assert resolve_sources(["dist:fakedist"])[0].label == "fakedist==1.1:fakepkg"


def test_deps_are_kdkits_requirements_and_unknown_dists_are_user_errors():
    roots = resolve_sources(["deps"])
    dists = {r.distribution for r in roots}
    assert {"torch", "numpy", "pydantic", "pluggy"} <= dists
    assert not {"pytest", "triton", "ruff"} & dists  # extras are not scanned
    assert all(r.label.startswith(f"{r.distribution}=={r.version}:") for r in roots)
    with pytest.raises(KdkitError, match="not installed") as err:
        resolve_sources(["dist:no-such-distribution-xyz"])
    assert "pip install" in str(err.value)


def test_dist_source_without_python_files_is_an_error(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    info = tmp_path / "emptydist-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: emptydist\nVersion: 3\n")
    (info / "RECORD").write_text("emptydist-0.dist-info/METADATA,,\n")
    with pytest.raises(KdkitError, match="no Python files"):
        resolve_sources(["dist:emptydist"])
