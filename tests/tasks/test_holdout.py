"""The machine-wide held-out files (kdkit.data.holdout): evaluation splits come only from them,
so a teacher pre-trained on the rest of the local code never saw a validation or test example."""

from __future__ import annotations

import json
import shutil

from kdkit.data.build import split_by_group
from kdkit.data.corpus import stdlib_sample
from kdkit.data.holdout import HELD_OUT_SHARE, describe, holdout_key, is_held_out
from kdkit.plugins.tasks.exception.builder import ExceptionBuildOptions, build


def test_the_rule_is_a_stable_hash_holding_out_its_share_of_files():
    keys = [f"stdlib:pkg{n // 50}/mod{n}.py" for n in range(20_000)]
    share = sum(map(is_held_out, keys)) / len(keys)
    assert abs(share - HELD_OUT_SHARE) < 0.015  # 20,000 keys: 3.5 standard deviations
    # versions and a directory's absolute path are not part of the key (same on every machine)
    assert holdout_key("torch==2.13.0:torch:nn/functional.py") == "torch:torch:nn/functional.py"
    assert holdout_key("/home/me/src:pkg/a.py") == holdout_key("/tmp/x/src:pkg/a.py")
    assert is_held_out("numpy==2.4.6:numpy:linalg/x.py") == is_held_out(
        "numpy==9:numpy:linalg/x.py"
    )
    assert describe() == {"salt": "kdkit-holdout-v1", "share": HELD_OUT_SHARE, "level": "file"}


def test_split_by_group_puts_only_allowed_groups_into_validation_and_test():
    items = [(f"g{g}", f"k{g}-{i}", "ab"[i % 2]) for g in range(60) for i in range(5)]
    allowed = {f"g{g}" for g in range(0, 60, 3)}  # a third of the groups
    for label_of in (None, lambda it: it[2]):
        result = split_by_group(
            items,
            lambda it: it[0],
            lambda it: it[1],
            seed=0,
            fractions=(0.7, 0.15, 0.15),
            label_of=label_of,
            eval_allowed=allowed.__contains__,
        )
        for split in ("validation", "test"):
            assert result.splits[split] and {it[0] for it in result.splits[split]} <= allowed
        assert sum(map(len, result.splits.values())) == len(items)  # nothing lost
        # forced-train groups are all in train; the allowed ones fill evaluation first
        train_groups = {it[0] for it in result.splits["train"]}
        assert {f"g{g}" for g in range(60)} - allowed <= train_groups
        assert 40 <= len(result.splits["validation"]) <= 50  # 15 % of 300 = 45


def test_a_build_takes_evaluation_rows_only_from_held_out_files(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for p in stdlib_sample():
        shutil.copy(p, src / p.name)
    out = tmp_path / "out"
    report = build(
        out, ExceptionBuildOptions(sources=[str(src)], labels="top-6", min_examples=20), quiet=True
    )
    stats = json.loads((out / "stats.json").read_text())
    assert stats["options"]["holdout"] == describe("file")
    files = {}
    for split, name in (("train", "train"), ("validation", "valid"), ("test", "test")):
        rows = [json.loads(line) for line in (out / f"{name}.jsonl").open()]
        files[split] = {row["info"].split(" ")[0].split(":", 1)[1] for row in rows}
        assert len(rows) == report.sizes[split] > 0
    for split in ("validation", "test"):
        assert all(is_held_out(f"{src}:{rel}") for rel in files[split]), split
    assert any(not is_held_out(f"{src}:{rel}") for rel in files["train"])
    # --no-holdout lets any file be evaluated on, and records no rule
    build(
        tmp_path / "free",
        ExceptionBuildOptions(sources=[str(src)], labels="top-6", min_examples=20, holdout=False),
        quiet=True,
    )
    free = json.loads((tmp_path / "free" / "stats.json").read_text())
    assert free["options"]["holdout"] is None
