"""``kdkit cache import``: the file is validated against the task's split (each problem a clear
KdkitError: what, where, fix; exit 2, no traceback), stored in split order with a manifest, and
``kdkit cache ls/verify/clear`` know the imported kind."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file, save_file

from kdkit.cli import main
from kdkit.data.example_ids import content_id, example_ids, ids_of_rows

from .conftest import LABELS, task_split

META = {
    "format": "kdkit-teacher-outputs",
    "format_version": "1",
    "model": "org/tiny-roberta",
    "temperature": "2.0",
    "split": "train",
    "num_classes": str(len(LABELS)),
}


def _write(path, tensors, meta=META):
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=meta)
    return path


def _full(ids, n, c=len(LABELS), seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"ids": torch.tensor(ids, dtype=torch.int64), "logits": torch.randn(n, c, generator=g)}


def _import(run_file, cache, path, *extra):
    return main(
        ["cache", "--dir", str(cache), "import", str(path), "--config", str(run_file), *extra]
    )


def test_content_ids_are_the_documented_hash_and_tell_repeats_apart():
    import hashlib

    raw = json.dumps(["def f(): pass", None, 0]).encode()
    assert (
        content_id("def f(): pass") == int.from_bytes(hashlib.sha256(raw).digest()[:8], "big") >> 1
    )
    ids = ids_of_rows(["a", "b", "a"], [None, None, None])
    assert ids[0] == content_id("a") and ids[2] == content_id("a", None, 1) != ids[0]
    assert all(0 <= i < 2**63 for i in ids)
    assert content_id("a", "b") != content_id("a")


def test_full_logits_import_is_stored_in_split_order_and_listed_verified_cleared(
    data_run, tmp_path, capsys
):
    run_file, cache = data_run
    split = task_split(run_file, cache, "train")
    ids = example_ids(split)
    perm = torch.randperm(len(ids), generator=torch.Generator().manual_seed(1))
    tensors = _full([ids[i] for i in perm], len(ids))
    path = _write(tmp_path / "t.safetensors", tensors)
    assert _import(run_file, cache, path, "--name", "tiny", "--json") == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["kind"] == "imported" and meta["rows"] == len(ids) and meta["split"] == "train"
    assert meta["source_model"] == "org/tiny-roberta" and meta["temperature"] == 2.0
    assert meta["logits_format"] is None and meta["num_classes"] == len(LABELS)
    assert meta["bytes_per_example"] == meta["full_logits_bytes_per_example"] == 4 * len(LABELS)
    entry = cache / "teacher-imports" / "tiny-train"
    assert (entry / "kdkit-manifest.json").is_file()
    stored = load_file(str(entry / meta["shards"][0]))["logits"]
    # row r of the split is file row perm^-1(r); logits are kept as T * logits (T = 2)
    inverse = torch.argsort(perm)
    torch.testing.assert_close(stored, 2.0 * tensors["logits"][inverse])
    assert main(["cache", "--dir", str(cache), "ls"]) == 0
    listing = capsys.readouterr().out
    assert "teacher-imports" in listing and "tiny-train" in listing
    assert "source_model=org/tiny-roberta" in listing and "logits=full" in listing
    assert main(["cache", "--dir", str(cache), "verify", "tiny-train"]) == 0
    assert "ok" in capsys.readouterr().out
    # an import of the same name is refused, --replace replaces it
    assert _import(run_file, cache, path, "--name", "tiny") == 2
    assert "an import named 'tiny' of the train split exists" in capsys.readouterr().err
    assert _import(run_file, cache, path, "--name", "tiny", "--replace") == 0
    capsys.readouterr()
    (entry / meta["shards"][0]).write_bytes(b"x" * 10)  # damage: verify reports it
    assert main(["cache", "--dir", str(cache), "verify"]) == 2
    assert "damaged" in capsys.readouterr().out
    assert main(["cache", "--dir", str(cache), "clear", "tiny-train"]) == 0
    assert not entry.exists()


def test_topk_import_without_tail_gets_the_remaining_mass(data_run, tmp_path, capsys):
    run_file, cache = data_run
    ids = example_ids(task_split(run_file, cache, "train"))
    logits = torch.randn(len(ids), len(LABELS), generator=torch.Generator().manual_seed(2))
    log_p = torch.log_softmax(logits / 2.0, -1)
    values, indices = log_p.topk(2, dim=-1)
    tensors = {"ids": torch.tensor(ids), "topk_logprobs": values, "topk_indices": indices}
    path = _write(tmp_path / "k.safetensors", tensors)
    assert _import(run_file, cache, path, "--name", "k2", "--json") == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["logits_format"] == {"format": "topk", "k": 2, "temperature": 2.0}
    assert meta["bytes_per_example"] == 2 * 8 + 4
    shard = load_file(str(cache / "teacher-imports" / "k2-train" / meta["shards"][0]))
    expect = torch.logsumexp(log_p.scatter(1, indices, float("-inf")), -1)
    torch.testing.assert_close(shard["tail"], expect, rtol=1e-4, atol=1e-5)
    assert shard["topk_indices"].dtype == torch.int32


def _bad_cases(ids, n, c):
    """(name, tensors, metadata, cli extra, message parts) of each refused file."""
    ok = _full(ids, n, c)
    t = torch.tensor
    nan = {**ok, "logits": ok["logits"].clone()}
    nan["logits"][3, 1] = float("nan")
    dup = {**ok, "ids": t([ids[0]] + ids[:-1])}
    lp = torch.log_softmax(ok["logits"], -1)
    val, idx = lp.topk(2, dim=-1)
    return [
        (
            "no-temperature",
            ok,
            {k: v for k, v in META.items() if k != "temperature"},
            [],
            ["the file's metadata has no 'temperature'", "(safetensors metadata)", "fix: save it"],
        ),
        (
            "bad-temperature",
            ok,
            {**META, "temperature": "-1"},
            [],
            ["temperature must be a positive number, got '-1'", "metadata temperature"],
        ),
        (
            "version",
            ok,
            {**META, "format_version": "7"},
            [],
            ["version '7'; this kdkit reads 'kdkit-teacher-outputs' version 1"],
        ),
        (
            "classes",
            ok,
            {**META, "num_classes": "9"},
            [],
            [f"num_classes is '9' but the task has {c} classes", "metadata num_classes"],
        ),
        (
            "split",
            ok,
            META,
            ["--split", "test"],
            ["the file holds the 'train' split, not 'test'", "fix: pass --split train"],
        ),
        ("no-ids", {"logits": ok["logits"]}, META, [], ["the file has no tensor 'ids'"]),
        (
            "both",
            {**ok, "topk_logprobs": val, "topk_indices": idx},
            META,
            [],
            ["either 'logits' or 'topk_logprobs'", "not both"],
        ),
        (
            "shape",
            {**ok, "logits": ok["logits"][:, :2]},
            META,
            [],
            [f"'logits' must be [N, C] = [{n}, {c}]", f"got [{n}, 2]", ":logits"],
        ),
        (
            "dtype",
            {**ok, "logits": ok["logits"].long()},
            META,
            [],
            ["tensor 'logits' must be a float", "got torch.int64"],
        ),
        ("nan", nan, META, [], ["'logits' has 1 non-finite value(s) (first in row 3)"]),
        ("dup-ids", dup, META, [], [f"id {ids[0]} appears twice in the file (rows 0 and 1)"]),
        (
            "missing",
            _full(ids[:-2], n - 2, c),
            META,
            [],
            [
                "do not cover the train split exactly",
                f"2 of the split's {n} rows have no output",
                "fix: compute ids with kdkit.data.example_ids.example_ids",
            ],
        ),
        (
            "extra",
            _full(ids + [12345], n + 1, c),
            META,
            [],
            ["1 id(s) are not rows of the split (first: [12345])"],
        ),
        (
            "logits-as-logprobs",
            {"ids": ok["ids"], "topk_logprobs": val + 5, "topk_indices": idx},
            META,
            [],
            ["'topk_logprobs' holds values above 0"],
        ),
        (
            "index-range",
            {"ids": ok["ids"], "topk_logprobs": val, "topk_indices": idx + c},
            META,
            [],
            [f"class ids outside [0, {c})"],
        ),
        (
            "repeat",
            {"ids": ok["ids"], "topk_logprobs": val, "topk_indices": idx[:, :1].repeat(1, 2)},
            META,
            [],
            ["repeats a class id within a row"],
        ),
        (
            "tail-sum",
            {"ids": ok["ids"], "topk_logprobs": val, "topk_indices": idx, "tail": torch.zeros(n)},
            META,
            [],
            [
                "sum to",
                "not 1 (tolerance 0.001)",
                "fix: store tail = log(1 - sum(exp(topk_logprobs)))",
            ],
        ),
    ]


def test_each_bad_file_is_refused_with_what_where_and_fix(data_run, tmp_path, capsys):
    run_file, cache = data_run
    ids = example_ids(task_split(run_file, cache, "train"))
    for name, tensors, meta, extra, parts in _bad_cases(ids, len(ids), len(LABELS)):
        path = _write(tmp_path / f"{name}.safetensors", tensors, meta)
        assert _import(run_file, cache, path, *extra) == 2, name
        err = capsys.readouterr().err
        err = err[err.index("kdkit: error: ") :]  # (after any datasets progress bar)
        assert err.startswith(f"kdkit: error: {path}"), (name, err)
        assert "Traceback" not in err and "\n  fix: " in err, (name, err)
        for part in parts:
            assert part in err, (name, part, err)
    assert not (cache / "teacher-imports").exists() or not any(
        (cache / "teacher-imports").iterdir()
    )


def test_not_a_safetensors_file_and_no_task_are_clear_errors(data_run, tmp_path, capsys):
    run_file, cache = data_run
    junk = tmp_path / "junk.safetensors"
    junk.write_text("not safetensors")
    assert _import(run_file, cache, junk) == 2
    err = capsys.readouterr().err
    assert "cannot read the file as safetensors" in err and "fix: write it with" in err
    assert main(["cache", "--dir", str(cache), "import", str(junk)]) == 2
    assert "say which task the file is for" in capsys.readouterr().err


def test_a_feature_method_cannot_train_from_an_import(data_run, tmp_path, capsys):
    run_file, cache = data_run
    ids = example_ids(task_split(run_file, cache, "train"))
    path = _write(tmp_path / "t.safetensors", _full(ids, len(ids)))
    assert _import(run_file, cache, path, "--name", "t") == 0
    code = main(
        [
            "run",
            str(run_file),
            "--set",
            "cache.teacher_import=t",
            "--set",
            "method.name=rkd",
            "--set",
            f"output_dir={tmp_path / 'r'}",
            "--set",
            f"cache.dir={cache}",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "imported teacher outputs hold logits only" in err and "embedding True" in err
    assert "fix: use a logit-based method" in err
