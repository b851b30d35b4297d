"""The fault corpus, data half: broken files in each public format (Devign JSONL, CuBERT JSONL,
pair JSONL, BigCloneBench ``data.jsonl`` + pair files), and ``kdkit data build`` into an existing
``--out`` killed at any moment.

Every broken file is refused with a :class:`~kdkit.errors.KdkitError` (exit status 2) whose
message names ``file:line``, stays short whatever the line holds, and leaves the file as it was;
a few go through ``kdkit run`` in-process and one through a real process, to show the CLI prints
the message and no traceback. Nothing is coerced: code that is an int or a dict is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kdkit.data.build import BuildReport, build_atomically
from kdkit.data.formats import warn_duplicates
from kdkit.errors import KdkitError
from kdkit.plugins.tasks.clone.format import read_bigclonebench
from kdkit.plugins.tasks.defect.format import read_devign
from kdkit.plugins.tasks.exception.format import read_cubert
from tests.reliability.faults import (
    FIXTURES,
    MAX_MESSAGE,
    ROOT,
    Result,
    assert_user_error,
    base_config,
    digest,
    kdkit,
)

#: format -> (fixture folder, reader, split files, the code field(s), the label field)
FORMATS: dict[str, tuple[str, Callable, tuple[str, ...], tuple[str, ...], str]] = {
    "devign": ("devign", read_devign, ("train", "valid", "test"), ("func",), "target"),
    "cubert": ("cubert", read_cubert, ("train", "dev", "eval"), ("function",), "label"),
    "pairs": (
        "pairs",
        read_bigclonebench,
        ("train", "valid", "test"),
        ("func1", "func2"),
        "target",
    ),
}

Corrupt = Callable[[dict, str, str], bytes]  # (a valid object, code field, label field) -> a line


def _json(obj: object) -> bytes:
    return json.dumps(obj).encode()


def _with(key_of: str, value: object) -> Corrupt:
    """The object with its code (``key_of="code"``) or label field set to ``value``."""

    def corrupt(obj: dict, code: str, label: str) -> bytes:
        return _json({**obj, (code if key_of == "code" else label): value})

    return corrupt


def _without(obj: dict, code: str, label: str) -> bytes:
    return _json({k: v for k, v in obj.items() if k != code})


# (id, how line 2 is broken, what the message says)
LINE_FAULTS: list[tuple[str, Corrupt, str]] = [
    ("non-utf8", lambda o, c, lab: _json(o)[:-2] + b"\xff\xfe" + _json(o)[-2:], "not UTF-8"),
    ("latin1-code", lambda o, c, lab: _json({**o, c: "caf"})[:-2] + b"\xe9" + b'"}', "not UTF-8"),
    ("truncated", lambda o, c, lab: _json(o)[:-5], "not valid JSON"),
    ("array", lambda o, c, lab: _json([o]), "not an object"),
    ("string", lambda o, c, lab: _json("just text"), "not an object"),
    ("deep-nesting", lambda o, c, lab: b"[" * 100_000 + b"]" * 100_000, "cannot read the JSON"),
    (
        "5000-digit-label",
        lambda o, c, lab: _json(o)[:-1] + b', "x": ' + b"9" * 5000 + b"}",
        "cannot read",
    ),
    ("code-int", _with("code", 12345), "must be a string"),
    ("code-dict", _with("code", {"body": "return 1"}), "must be a string"),
    ("code-list", _with("code", ["int f() {}"]), "must be a string"),
    ("code-null", _with("code", None), "must be a string"),
    ("code-bool", _with("code", True), "must be a string"),
    ("code-missing", _without, "missing field"),
    ("label-dict", _with("label", {"a": 1}), "label"),
    ("label-4MB", _with("label", "x" * 4_000_000), "label"),
    ("line-4MB-bad-json", lambda o, c, lab: b'{"x": "' + b"y" * 4_000_000, "not valid JSON"),
]

DATA_CASES = [
    (fmt, split, fault)
    for fmt, (_, _, splits, _, _) in FORMATS.items()
    for split in splits
    for fault in LINE_FAULTS
    if not (fmt == "cubert" and fault[0] == "label-4MB")  # a long label *name* is a string
]


def _copy(fixture: str, tmp: Path) -> Path:
    out = tmp / fixture
    shutil.copytree(FIXTURES / fixture, out)
    return out


def _break_line(path: Path, line: bytes) -> None:
    """Line 2 of ``path`` becomes ``line`` (appended when the file has one line)."""
    lines = [x.rstrip(b"\n") + b"\n" for x in path.read_bytes().splitlines(keepends=True)]
    lines[1:2] = [line + b"\n"]
    path.write_bytes(b"".join(lines))


def _refused(call: Callable[[], object], where: str, says: str) -> KdkitError:
    with pytest.raises(KdkitError) as info:
        call()
    err = info.value
    text = err.render()
    assert err.exit_code == 2
    assert where in text, (where, text[:2000])
    assert says in text, (says, text[:2000])
    assert len(text) < MAX_MESSAGE, len(text)
    return err


@pytest.mark.parametrize(
    ("fmt", "split", "fault"),
    DATA_CASES,
    ids=[f"{fmt}-{split}-{fault[0]}" for fmt, split, fault in DATA_CASES],
)
def test_broken_line_is_refused_naming_file_and_line(fmt, split, fault, tmp_path):
    fixture, reader, _, fields, label = FORMATS[fmt]
    folder = _copy(fixture, tmp_path)
    path = folder / f"{split}.jsonl"
    first = json.loads(path.read_text().splitlines()[0])
    name, corrupt, says = fault
    if name == "label-dict" and fmt == "cubert":
        says = "must be a string"  # CuBERT labels are names
    _break_line(path, corrupt(first, fields[-1], label))
    before = digest(path)
    _refused(lambda: reader(folder, {}, "build it"), f"{path}:2", says)
    assert digest(path) == before


# ------------------------------------------------------------------------------ BigCloneBench


def _bcb(tmp: Path) -> Path:
    return _copy("bigclonebench", tmp)


BCB_DATA_FAULTS = [f for f in LINE_FAULTS if not f[0].startswith("label")]


@pytest.mark.parametrize("fault", BCB_DATA_FAULTS, ids=[f[0] for f in BCB_DATA_FAULTS])
def test_broken_data_jsonl_line_is_refused(fault, tmp_path):
    folder = _bcb(tmp_path)
    path = folder / "data.jsonl"
    first = json.loads(path.read_text().splitlines()[0])
    name, corrupt, says = fault
    _break_line(path, corrupt(first, "func", "idx"))
    _refused(lambda: read_bigclonebench(folder, {}, "build it"), f"{path}:2", says)


PAIR_FILE_FAULTS = [
    ("non-utf8", b"1\t2\t\xff", "not UTF-8"),
    ("two-fields", b"1\t2", "expected 'idx1 idx2 label'"),
    ("four-fields", b"1\t2\t0\t9", "expected 'idx1 idx2 label'"),
    ("unknown-idx", b"1\t999999\t0", "'999999' is not in data.jsonl"),
    ("bad-label", b"1\t2\tmaybe", "not 0/1"),
    ("line-4MB", b"1 " * 2_000_000, "expected 'idx1 idx2 label'"),
]
PAIR_CASES = [(s, f) for s in ("train", "valid", "test") for f in PAIR_FILE_FAULTS]


@pytest.mark.parametrize(("split", "fault"), PAIR_CASES, ids=[f"{s}-{f[0]}" for s, f in PAIR_CASES])
def test_broken_pair_file_line_is_refused(split, fault, tmp_path):
    folder = _bcb(tmp_path)
    path = folder / f"{split}.txt"
    name, line, says = fault
    ids = [json.loads(x)["idx"] for x in (folder / "data.jsonl").read_text().splitlines()]
    line = line.replace(b"1", str(ids[0]).encode(), 1).replace(b"\t2", f"\t{ids[1]}".encode(), 1)
    _break_line(path, line)
    _refused(lambda: read_bigclonebench(folder, {}, "build it"), f"{path}:2", says)


@pytest.mark.parametrize("idx_kind", ["same-type", "int-vs-str"])
def test_an_idx_given_twice_with_different_code_is_refused(idx_kind, tmp_path):
    folder = _bcb(tmp_path)
    path = folder / "data.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    twin = dict(rows[0], func=rows[0]["func"] + "\n// another function")
    if idx_kind == "int-vs-str":  # 7 and "7" are the same idx in the pair files
        twin["idx"] = (
            int(rows[0]["idx"]) if isinstance(rows[0]["idx"], str) else str(rows[0]["idx"])
        )
    path.write_text("\n".join(json.dumps(r) for r in [*rows, twin]) + "\n")
    err = _refused(
        lambda: read_bigclonebench(folder, {}, "build it"),
        f"{path}:{len(rows) + 1}",
        "given twice with different code (lines 1 and",
    )
    assert f"lines 1 and {len(rows) + 1}" in err.what


def test_an_idx_repeated_with_the_same_code_is_harmless(tmp_path):
    folder = _bcb(tmp_path)
    path = folder / "data.jsonl"
    lines = path.read_text().splitlines()
    clean, _ = read_bigclonebench(_bcb(tmp_path / "clean"), {}, "")
    path.write_text("\n".join([*lines, lines[0]]) + "\n")
    rows, _ = read_bigclonebench(folder, {}, "")
    assert rows == clean


@pytest.mark.parametrize(
    "idx", [1.5, True, None, {"a": 1}, [1]], ids=["float", "bool", "null", "dict", "list"]
)
def test_an_idx_that_is_no_id_is_refused(idx, tmp_path):
    folder = _bcb(tmp_path)
    path = folder / "data.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    rows[2]["idx"] = idx
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    _refused(
        lambda: read_bigclonebench(folder, {}, ""), f"{path}:3", "must be a string or an integer"
    )


# ------------------------------------------------------------------------------ duplicates


def test_duplicated_training_rows_are_counted_and_warned(capsys):
    rows = [{"text": "a", "label": 0}, {"text": "b", "label": 1}, {"text": "a", "label": 0}]
    rows += [{"text": "b", "label": 0}, {"text": "c", "label": 1}]
    assert warn_duplicates(rows, "train.jsonl") == 2
    err = capsys.readouterr().err
    assert "2 of 5 training rows repeat an earlier row, 1 of them with another label" in err
    assert "train.jsonl" in err
    assert warn_duplicates([{"text": "a", "text_pair": "b", "label": 1}] * 1, "x") == 0
    assert capsys.readouterr().err == ""


def test_a_task_with_duplicated_training_rows_warns_when_loaded(tmp_path, capsys):
    from kdkit.api import BuildContext
    from kdkit.plugins.tasks.defect import DefectOptions, DefectTask

    folder = _copy("devign", tmp_path)
    train = folder / "train.jsonl"
    lines = train.read_text().splitlines()
    train.write_text("\n".join([*lines, lines[0], lines[1], lines[0]]) + "\n")
    task = DefectTask(
        DefectOptions(data_dir=str(folder)), BuildContext(cache_dir=str(tmp_path / "c"))
    )
    splits = task.load()
    assert len(splits["train"]) == len(lines) + 3  # kept: the data may mean them
    assert f"3 of {len(lines) + 3:,} training rows repeat an earlier row" in capsys.readouterr().err


# ------------------------------------------------------------------------------ through the CLI


@pytest.mark.parametrize(
    ("fault", "says"),
    [
        (LINE_FAULTS[0], "not UTF-8"),
        (LINE_FAULTS[7], "must be a string"),
        (LINE_FAULTS[8], "must be a string"),
    ],
    ids=["non-utf8", "code-int", "code-dict"],
)
def test_kdkit_run_on_broken_data_prints_the_message(fault, says, tmp_path):
    folder = _copy("devign", tmp_path)
    path = folder / "valid.jsonl"
    first = json.loads(path.read_text().splitlines()[0])
    _break_line(path, fault[1](first, "func", "target"))
    config = tmp_path / "run.yaml"
    config.write_text(base_config(tmp_path, folder))
    assert_user_error(kdkit("run", str(config), "--quiet"), f"{path}:2", says)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_no_traceback_on_real_stderr_for_a_non_utf8_split(tmp_path):
    folder = _copy("devign", tmp_path)
    path = folder / "test.jsonl"
    _break_line(path, b'{"func": "caf\xe9", "target": 0}')
    config = tmp_path / "run.yaml"
    config.write_text(base_config(tmp_path, folder))
    env = {k: v for k, v in os.environ.items() if k != "KDKIT_DEBUG"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-m", "kdkit", "run", str(config), "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert_user_error(Result(done.returncode, done.stdout, done.stderr), f"{path}:2", "not UTF-8")


# ------------------------------------------------------------------------------ data build


def _fake_build(tag: str, fail_after: int | None = None) -> Callable[[Path], BuildReport]:
    """A builder writing three splits and stats.json, all saying ``tag``."""

    def build(out: Path) -> BuildReport:
        for i, name in enumerate(("train", "valid", "test")):
            if fail_after is not None and i == fail_after:
                raise KdkitError("the build failed", where="test")
            (out / f"{name}.jsonl").write_text(json.dumps({"func": tag, "target": 0}) + "\n")
        (out / "stats.json").write_text(json.dumps({"tag": tag}))
        return BuildReport("fake", out, {}, {}, [], {})

    return build


def _tags(out: Path) -> set[str]:
    return {json.loads(p.read_text())["func"] for p in out.glob("*.jsonl")}


def test_build_into_a_new_folder(tmp_path):
    report = build_atomically(tmp_path / "out", _fake_build("new"))
    assert report.out_dir == tmp_path / "out" and _tags(tmp_path / "out") == {"new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder left


def test_rebuild_replaces_a_build_whole(tmp_path):
    out = tmp_path / "out"
    build_atomically(out, _fake_build("old"))
    build_atomically(out, _fake_build("new"))
    assert _tags(out) == {"new"} and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_failed_rebuild_keeps_the_old_build_whole(tmp_path):
    out = tmp_path / "out"
    build_atomically(out, _fake_build("old"))
    with pytest.raises(KdkitError):
        build_atomically(out, _fake_build("new", fail_after=2))
    assert _tags(out) == {"old"} and len(list(out.glob("*.jsonl"))) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_build_refuses_a_folder_of_the_users_files_and_a_file(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    with pytest.raises(KdkitError, match="not a kdkit build"):
        build_atomically(mine, _fake_build("new"))
    assert (mine / "notes.txt").read_text() == "my notes"
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(KdkitError, match="is a file"):
        build_atomically(afile, _fake_build("new"))
    assert afile.read_text() == "x"


def test_build_without_the_exchange_call_swaps_by_two_renames(tmp_path, monkeypatch):
    import kdkit.data.build as build_module

    monkeypatch.setattr(build_module, "_exchange", lambda a, b: False)
    out = tmp_path / "out"
    build_atomically(out, _fake_build("old"))
    build_atomically(out, _fake_build("new"))
    assert _tags(out) == {"new"} and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


KILLER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from kdkit.data.build import BuildReport, build_atomically

    def build(out):
        for name in ("train", "valid", "test"):
            (out / f"{name}.jsonl").write_text(json.dumps({"func": "new", "target": 0}) + "\\n")
            time.sleep(0.02)
        (out / "stats.json").write_text("{}")
        return BuildReport("fake", out, {}, {}, [], {})

    print("start", flush=True)
    build_atomically(Path(sys.argv[1]), build)
    """
)


def test_a_kill_at_any_moment_leaves_all_old_or_all_new_splits(tmp_path):
    """``kill -9`` of a rebuild at staggered moments: the splits at --out are never mixed."""
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    seen = set()
    for delay in (0.0, 0.03, 0.06):
        out = tmp_path / f"out{delay}"
        build_atomically(out, _fake_build("old"))
        proc = subprocess.Popen(
            [sys.executable, str(script), str(out)], stdout=subprocess.PIPE, env=env
        )
        assert proc.stdout is not None and proc.stdout.readline() == b"start\n"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        tags = _tags(out)
        assert tags in ({"old"}, {"new"}), (delay, tags)
        assert len(list(out.glob("*.jsonl"))) == 3 and (out / "stats.json").is_file()
        seen |= tags
    assert "old" in seen  # the early kills did land before the swap
    out = tmp_path / "unkilled"  # and left alone, the same script puts the new build in place
    build_atomically(out, _fake_build("old"))
    subprocess.run(
        [sys.executable, str(script), str(out)], env=env, check=True, capture_output=True
    )
    assert _tags(out) == {"new"}
