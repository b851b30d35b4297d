"""`datasets` inputs of a CodeTask: JSONL/CSV/Parquet through data_files, a save_to_disk folder
as data_dir, an in-memory Dataset/DatasetDict, each with a `columns:` mapping; bad column names
list the available ones; the fingerprint follows the content and the mapping."""

from __future__ import annotations

import inspect
import json
import textwrap
from pathlib import Path

import datasets
import pytest

from kdkit.data.task import use_dataset
from kdkit.errors import KdkitError
from kdkit.plugins.tasks.clone import CloneTask
from kdkit.plugins.tasks.defect import DefectOptions, DefectTask

# 30 real functions of the standard library: rows whose "code" is real source
_FUNCS = [
    f
    for m in (textwrap, json.decoder, json.encoder, inspect)
    for f in vars(m).values()
    if inspect.isfunction(f) and f.__module__ == m.__name__
]
CODE = [textwrap.dedent(inspect.getsource(f)) for f in _FUNCS[:30]]
assert len(CODE) == 30
SPLIT_OF = {"train": range(0, 16), "validation": range(16, 23), "test": range(23, 30)}


def user_rows(split: str) -> list[dict]:
    """Rows in a user's own shape: `code` and `y` (plus an unrelated `id`)."""
    return [{"id": i, "code": CODE[i], "y": i % 2} for i in SPLIT_OF[split]]


def defect(tmp_path: Path, **options) -> DefectTask:
    from kdkit.api import BuildContext

    return DefectTask(DefectOptions(**options), BuildContext(cache_dir=str(tmp_path / "cache")))


def expect_rows(dd) -> None:
    for split, idx in SPLIT_OF.items():
        assert dd[split]["text"] == [CODE[i] for i in idx]
        assert dd[split]["label"] == [i % 2 for i in idx]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_own_files_with_other_field_names_load_through_columns(tmp_path, fmt):
    files = {}
    for split in SPLIT_OF:
        path = tmp_path / f"{split}.{fmt}"
        if fmt == "jsonl":
            write_jsonl(path, user_rows(split))
        else:
            ds = datasets.Dataset.from_list(user_rows(split))
            ds.to_csv(str(path)) if fmt == "csv" else ds.to_parquet(str(path))
        files[split] = path.name
    task = defect(
        tmp_path, data_dir=str(tmp_path), data_files=files, columns={"code": "func", "y": "target"}
    )
    expect_rows(task.load())


def test_bad_column_names_list_the_available_columns(tmp_path):
    files = {s: str(write_jsonl(tmp_path / f"{s}.jsonl", user_rows(s))) for s in SPLIT_OF}
    with pytest.raises(KdkitError) as err:
        defect(tmp_path, data_files=files, columns={"source": "func", "y": "target"}).load()
    assert "'source' not in task.data_files[train]" in err.value.what
    assert "available columns: id, code, y" in err.value.what
    assert err.value.where == "task.columns"
    # no mapping at all: the task's field is missing, and the columns it has are named
    with pytest.raises(KdkitError) as err:
        defect(tmp_path, data_files=files).load()
    assert "missing field 'func'" in err.value.what and "id, code, y" in err.value.what
    assert "columns:" in err.value.fix


def test_a_save_to_disk_folder_is_a_data_dir(tmp_path):
    dd = datasets.DatasetDict(
        {
            ("valid" if s == "validation" else s): datasets.Dataset.from_list(user_rows(s))
            for s in SPLIT_OF
        }
    )
    dd.save_to_disk(str(tmp_path / "saved"))
    task = defect(
        tmp_path, data_dir=str(tmp_path / "saved"), columns={"code": "func", "y": "target"}
    )
    expect_rows(task.load())
    first = task.fingerprint()
    # another mapping of the same folder is another dataset; so is other content
    swapped = defect(
        tmp_path, data_dir=str(tmp_path / "saved"), columns={"code": "func", "id": "target"}
    )
    with pytest.raises(KdkitError, match="label 2 is not 0/1"):
        swapped.load()
    rows = user_rows("test")
    rows[0]["y"] = 1 - rows[0]["y"]
    dd["test"] = datasets.Dataset.from_list(rows)
    dd.save_to_disk(str(tmp_path / "saved2"))
    other = defect(
        tmp_path, data_dir=str(tmp_path / "saved2"), columns={"code": "func", "y": "target"}
    )
    assert other.load()["test"]["label"][0] != task.load()["test"]["label"][0]
    assert other.fingerprint() != first


def test_an_in_memory_dataset_dict_and_its_content_hash(tmp_path):
    dd = datasets.DatasetDict({s: datasets.Dataset.from_list(user_rows(s)) for s in SPLIT_OF})
    task = use_dataset(defect(tmp_path, columns={"code": "func", "y": "target"}), dd)
    expect_rows(task.load())
    # the same rows built again hash alike (the Arrow cache is reused); one changed label does not
    again = defect(tmp_path, columns={"code": "func", "y": "target"}).use_dataset(
        datasets.DatasetDict({s: datasets.Dataset.from_list(user_rows(s)) for s in SPLIT_OF})
    )
    assert again.fingerprint() == task.fingerprint()
    rows = user_rows("train")
    rows[3]["y"] = 1 - rows[3]["y"]
    changed = defect(tmp_path, columns={"code": "func", "y": "target"}).use_dataset(
        {**dd, "train": datasets.Dataset.from_list(rows)}
    )
    assert changed.fingerprint() != task.fingerprint()


def test_an_in_memory_dataset_through_the_build_context(tmp_path):
    from kdkit.api import BuildContext

    dd = datasets.DatasetDict({s: datasets.Dataset.from_list(user_rows(s)) for s in SPLIT_OF})
    ctx = BuildContext(cache_dir=str(tmp_path / "cache"), extra={"dataset": dd})
    expect_rows(DefectTask(DefectOptions(columns={"code": "func", "y": "target"}), ctx).load())


def test_one_in_memory_dataset_is_split_80_10_10_with_the_build_seed(tmp_path):
    rows = [r for s in SPLIT_OF for r in user_rows(s)]
    ds = datasets.Dataset.from_list(rows).rename_columns({"code": "func", "y": "target"})
    dd = defect(tmp_path).use_dataset(ds).load()
    assert [len(dd[s]) for s in ("train", "validation", "test")] == [24, 3, 3]
    assert sorted(t for s in dd for t in dd[s]["text"]) == sorted(CODE)
    other = defect(tmp_path, build_seed=1).use_dataset(ds).load()
    assert other["test"]["text"] != dd["test"]["text"]


def test_pairs_and_missing_splits(tmp_path):
    pairs = {
        s: [{"a": CODE[i], "b": CODE[(i + 1) % 30], "same": i % 2} for i in idx]
        for s, idx in SPLIT_OF.items()
    }
    files = {s: str(write_jsonl(tmp_path / f"p-{s}.jsonl", r)) for s, r in pairs.items()}
    from kdkit.api import BuildContext
    from kdkit.plugins.tasks.clone import CloneOptions

    task = CloneTask(
        CloneOptions(data_files=files, columns={"a": "func1", "b": "func2", "same": "target"}),
        BuildContext(cache_dir=str(tmp_path / "cache")),
    )
    dd = task.load()
    assert dd["validation"]["text_pair"][0] == CODE[17] and dd["test"]["label"][0] == 23 % 2
    with pytest.raises(KdkitError, match=r"has no \['test'\] split") as err:
        defect(
            tmp_path,
            data_files={"train": files["train"], "validation": files["validation"]},
            columns={"a": "func"},
        ).load()
    assert err.value.where == "task"


def test_columns_with_a_public_format_folder_is_refused(tmp_path):
    for s in SPLIT_OF:
        write_jsonl(
            tmp_path / f"{s}.jsonl", [{"func": r["code"], "target": r["y"]} for r in user_rows(s)]
        )
    expect_rows(defect(tmp_path, data_dir=str(tmp_path)).load())
    with pytest.raises(KdkitError, match="data_files") as err:
        defect(tmp_path, data_dir=str(tmp_path), columns={"code": "func"}).load()
    assert err.value.where == "task.columns"
