"""The fault corpus, artefact half: damaged checkpoints, saved models and cache entries.

Every case copies a tiny real artefact (built once per session, see artefact_fixtures), damages
one file (truncation, one flipped bit at several offsets — in the safetensors header and inside
the tensor data —, garbled JSON, deletion), runs the real ``kdkit`` command that reads it
(in-process) and asserts: exit code 2, no ``Traceback``, the message names the damaged file (or,
for an artefact written before manifests, its directory) and the fix, and the artefact is left
exactly as it was (nothing a user has is overwritten or deleted by the failed command).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from kdkit.integrity import MANIFEST

from .artefact_fixtures import (
    Artefacts,
    build_artefacts,
    copy_tree,
    corruptions,
    environment,
    kdkit,
    tiny_plugins,
    tree_digest,
)

CHECKPOINT_FILES = ("student.safetensors", "method.safetensors", "state.safetensors", "state.json")
MODEL_FILES = (
    "model.safetensors",
    "config.json",
    "kdkit.json",
    "tokenizer.json",
    "tokenizer_config.json",
)


@pytest.fixture(scope="session")
def artefacts(tmp_path_factory) -> Artefacts:
    """The session's tiny real artefacts (never modified: every case works on a copy).

    ``KDKIT_TEST_ARTEFACTS=DIR`` reuses (or builds once into) ``DIR`` across sessions, for
    iterating on the corpus; CI builds them fresh."""
    keep = os.environ.get("KDKIT_TEST_ARTEFACTS")
    if keep and (Path(keep) / "cached-run" / "summary.json").is_file():
        return Artefacts(
            Path(keep), Path(keep) / "run", Path(keep) / "run-cache",
            Path(keep) / "cached.yaml", Path(keep) / "cached-cache",
        )  # fmt: skip
    if keep:
        shutil.rmtree(keep, ignore_errors=True)  # a half-built one from an interrupted session
        Path(keep).mkdir(parents=True)
    return build_artefacts(Path(keep) if keep else tmp_path_factory.mktemp("artefacts"))


@pytest.fixture(scope="session")
def plugins():
    return tiny_plugins()


def assert_clean_failure(result, *names: str) -> None:
    """Exit 2, no traceback, and every one of ``names`` appears in the output."""
    assert "Traceback" not in result.text, result.text
    assert result.code == 2, result.text
    assert "kdkit: error:" in result.err, result.text
    for name in names:
        assert name in result.text, f"{name!r} not in: {result.text}"


def _cases(files: tuple[str, ...], skip: set[tuple[str, str]] = frozenset()):
    """``(file, corruption)`` ids for every file and every corruption kind of its suffix."""
    out = []
    for name in files:
        for c in corruptions(Path(name)):
            if (name, c.name) not in skip:
                out.append(pytest.param(name, c.name, id=f"{name}-{c.name}"))
    return out


def _apply(path: Path, kind: str) -> None:
    (match,) = [c for c in corruptions(path) if c.name == kind]
    match.apply(path)


# ------------------------------------------------------------------------ checkpoints


@pytest.mark.parametrize(("name", "kind"), _cases(CHECKPOINT_FILES))
def test_damaged_checkpoint_is_refused_on_resume(artefacts, plugins, tmp_path, name, kind):
    run = copy_tree(artefacts.run_dir, tmp_path / "run")
    _apply(run / "checkpoints" / "last" / name, kind)
    before = tree_digest(run)
    with environment(artefacts.run_cache, plugins):
        result = kdkit("run", "--resume", str(run), "--quiet")
    assert_clean_failure(result, name, "checkpoints/previous")  # the fix: the previous one
    assert tree_digest(run) == before


@pytest.mark.parametrize("kind", ["truncated-half", "flip-first-byte", "garbled", "null"])
def test_damaged_checkpoint_manifest_is_refused(artefacts, plugins, tmp_path, kind):
    run = copy_tree(artefacts.run_dir, tmp_path / "run")
    manifest = run / "checkpoints" / "last" / MANIFEST
    (c,) = [c for c in corruptions(Path("x.json")) if c.name == kind]
    c.apply(manifest)
    with environment(artefacts.run_cache, plugins):
        result = kdkit("run", "--resume", str(run), "--quiet")
    assert_clean_failure(result, MANIFEST, "checkpoints/previous")


LEGACY_CHECKPOINT = [
    ("student.safetensors", "truncated-half"),
    ("student.safetensors", "truncated-header-only"),
    ("student.safetensors", "header-garbage"),
    ("state.safetensors", "truncated-half"),
    ("state.safetensors", "header-garbage"),
    ("state.json", "empty-object"),
    ("state.json", "null"),
    ("state.json", "garbled"),
    ("state.json", "list"),
]


def _legacy_damage(path: Path, kind: str) -> None:
    if kind == "header-garbage":
        data = bytearray(path.read_bytes())
        data[8:24] = b"\xff" * 16
        path.write_bytes(bytes(data))
    elif kind == "list":
        path.write_text("[1, 2, 3]")
    else:
        _apply(path, kind)


@pytest.mark.parametrize(("name", "kind"), LEGACY_CHECKPOINT)
def test_damaged_checkpoint_without_manifest_is_a_clear_error(
    artefacts, plugins, tmp_path, name, kind
):
    """A checkpoint of a kdkit without manifests: the issue's tracebacks are clear errors."""
    run = copy_tree(artefacts.run_dir, tmp_path / "run")
    last = run / "checkpoints" / "last"
    (last / MANIFEST).unlink()
    _legacy_damage(last / name, kind)
    with environment(artefacts.run_cache, plugins):
        result = kdkit("run", "--resume", str(run), "--quiet")
    assert_clean_failure(result, name)


def test_resume_from_the_previous_checkpoint_after_a_damaged_last(artefacts, plugins, tmp_path):
    run = copy_tree(artefacts.run_dir, tmp_path / "run")
    for name in ("summary.json", "summary.txt", "predictions-test.jsonl", "kernels.json"):
        (run / name).unlink()
    shutil.rmtree(run / "last")
    previous = json.loads((run / "checkpoints" / "previous" / "state.json").read_text())
    _apply(run / "checkpoints" / "last" / "student.safetensors", "flip-tensor-data-middle")
    with environment(artefacts.run_cache, plugins):
        refused = kdkit("run", "--resume", str(run), "--quiet")
        assert_clean_failure(refused, "student.safetensors")
        fix = refused.err.split("fix:", 1)[1]
        command = fix[fix.index("`") + 1 : fix.index("`", fix.index("`") + 1)].split()
        assert command[:3] == ["kdkit", "run", "--resume"]
        assert command[3] == str(run / "checkpoints" / "previous")
        resumed = kdkit("run", "--resume", command[3], "--quiet")
    assert resumed.code == 0, resumed.text
    summary = json.loads((run / "summary.json").read_text())
    original = json.loads((artefacts.run_dir / "summary.json").read_text())
    assert summary["steps"] == original["steps"] == 8
    assert summary["test"] == original["test"]  # an exact resume from step 6
    assert (run / "checkpoints" / "damaged" / "student.safetensors").is_file()  # set aside
    assert "__dict__" in json.dumps(previous)
    steps = [
        r["step"]
        for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
        if r["event"] == "step"
    ]
    assert steps == list(range(1, 9))  # no step recorded twice after the resume


def test_each_checkpoint_is_verified_and_the_previous_kept(artefacts):
    from kdkit.integrity import check

    base = artefacts.run_dir / "checkpoints"
    assert sorted(p.name for p in base.iterdir()) == ["last", "previous"]
    assert check(base / "last") == [] and check(base / "previous") == []
    steps = []
    for name in ("last", "previous"):
        plain = json.loads((base / name / "state.json").read_text())
        trainer = dict(plain["__dict__"])
        steps.append(dict(trainer["trainer"]["__dict__"])["step"])
    assert steps == [8, 6]


# ------------------------------------------------------------------------ saved models


def _model_copy(artefacts: Artefacts, tmp_path: Path) -> Path:
    return copy_tree(artefacts.run_dir / "best" / "model", tmp_path / "model")


@pytest.mark.parametrize(("name", "kind"), _cases(MODEL_FILES))
def test_damaged_saved_model_is_refused_by_predict(artefacts, plugins, tmp_path, name, kind):
    model = _model_copy(artefacts, tmp_path)
    _apply(model / name, kind)
    before = tree_digest(model)
    code = tmp_path / "f.py"
    code.write_text("def f(x):\n    return x + 1\n")
    with environment(artefacts.run_cache, plugins):
        result = kdkit("predict", str(model), "--file", str(code))
    assert_clean_failure(result, name, "saved model")
    assert tree_digest(model) == before


def test_intact_saved_model_predicts(artefacts, plugins, tmp_path):
    code = tmp_path / "f.py"
    code.write_text("def f(x):\n    return x + 1\n")
    with environment(artefacts.run_cache, plugins):
        result = kdkit("predict", str(artefacts.run_dir), "--file", str(code))
    assert result.code == 0, result.text
    assert (
        json.loads(result.out)["label"]
        in json.loads((artefacts.run_dir / "best" / "model" / "kdkit.json").read_text())["labels"]
    )


def _kind_changed(path: Path) -> None:
    meta = json.loads(path.read_text())
    meta["component"]["kind"] = "reporter"
    path.write_text(json.dumps(meta))


def _garble(path: Path) -> None:
    path.write_text("{garbled")


LEGACY_MODEL = {
    "model-truncated": ("model.safetensors", lambda p: p.write_bytes(p.read_bytes()[:100])),
    "model-header": ("model.safetensors", lambda p: _legacy_damage(p, "header-garbage")),
    "kdkit-truncated": ("kdkit.json", lambda p: p.write_text(p.read_text()[:20])),
    "kind-changed": ("kdkit.json", _kind_changed),
    "config-deleted": ("config.json", lambda p: p.unlink()),
    "config-garbled": ("config.json", _garble),
    "tokenizer-truncated": ("tokenizer.json", lambda p: p.write_text(p.read_text()[:500])),
    "tokenizer-deleted": ("tokenizer.json", lambda p: p.unlink()),
}


@pytest.mark.parametrize("case", sorted(LEGACY_MODEL))
def test_damaged_saved_model_without_manifest_is_a_clear_error(artefacts, plugins, tmp_path, case):
    """The issue's 8 ``kdkit predict`` tracebacks, on a model saved before manifests."""
    model = _model_copy(artefacts, tmp_path)
    (model / MANIFEST).unlink()
    name, damage = LEGACY_MODEL[case]
    damage(model / name)
    code = tmp_path / "f.py"
    code.write_text("def f(x):\n    return x + 1\n")
    with environment(artefacts.run_cache, plugins):
        result = kdkit("predict", str(model), "--file", str(code))
    assert_clean_failure(result, str(model))
    assert "report this to the plugin" not in result.text


# ------------------------------------------------------------------------ cache entries

#: (cache kind, file inside the entry) of the defect run's cache that `cache verify` checks.
CACHE_FILES = [
    ("datasets", "train/data-00000-of-00001.arrow"),
    ("datasets", "test/data-00000-of-00001.arrow"),
    ("datasets", "dataset_dict.json"),
    ("datasets", "train/state.json"),
    ("datasets", "train/dataset_info.json"),
    ("teachers", "model.safetensors"),
    ("teachers", "config.json"),
    ("teachers", "kdkit.json"),
    ("teachers", "tokenizer.json"),
    ("teachers", "spec.json"),
    ("tokenizers", "tokenizer.json"),
    ("tokenizers", "tokenizer_config.json"),
    ("teacher-outputs", "shard-00000.safetensors"),
    ("teacher-outputs", "meta.json"),
]
VERIFY_KINDS = ("flip-first-byte", "flip-last-byte", "truncated-half", "deleted")


def _cache_copy(artefacts: Artefacts, tmp_path: Path) -> Path:
    return copy_tree(artefacts.cached_cache, tmp_path / "cache")


def test_cache_verify_passes_an_intact_cache(artefacts):
    result = kdkit("cache", "--dir", str(artefacts.cached_cache), "verify")
    assert result.code == 0, result.text
    assert "0 damaged, 0 unchecked" in result.out
    kinds = {line.split()[1] for line in result.out.splitlines() if line.startswith("  ok")}
    assert kinds == {"datasets", "teachers", "tokenizers", "teacher-outputs"}


VERIFY_CASES = [
    pytest.param(entry_kind, name, kind, id=f"{entry_kind}-{name}-{kind}")
    for entry_kind, name in CACHE_FILES
    for kind in VERIFY_KINDS
    + (("flip-tensor-data-middle",) if name.endswith(".safetensors") else ())
]


@pytest.mark.parametrize(("entry_kind", "name", "kind"), VERIFY_CASES)
def test_cache_verify_finds_every_damaged_file(artefacts, tmp_path, entry_kind, name, kind):
    cache = _cache_copy(artefacts, tmp_path)
    entry = sorted(p for p in (cache / entry_kind).iterdir() if not p.name.startswith("."))[0]
    _apply(entry / name, kind)
    before = tree_digest(cache)
    result = kdkit("cache", "--dir", str(cache), "verify")
    assert_clean_failure(result, entry.name, name, f"kdkit cache clear {entry.name}")
    assert tree_digest(cache) == before  # verify reports, it never deletes


def _consumer(artefacts: Artefacts, cache: Path, tmp_path: Path, plugins, *extra: str):
    with environment(cache, plugins):
        return kdkit(
            "run",
            str(artefacts.cached_yaml),
            "--quiet",
            "--set",
            f"output_dir={tmp_path / 'out'}",
            *extra,
        )


def _entry(cache: Path, kind: str, split: str | None = None) -> Path:
    entries = sorted(p for p in (cache / kind).iterdir() if not p.name.startswith("."))
    if split is not None:
        entries = [
            e for e in entries if json.loads((e / "meta.json").read_text())["split"] == split
        ]
    return entries[0]


CONSUMER_CASES = {
    "teacher-outputs-train": ("teacher-outputs", "train", "shard-00000.safetensors"),
    "teacher-outputs-test": ("teacher-outputs", "test", "shard-00000.safetensors"),
    "cached-teacher-weights": ("teachers", None, "model.safetensors"),
    "cached-tokenizer": ("tokenizers", None, "tokenizer.json"),
    "dataset-arrow": ("datasets", None, "train/data-00000-of-00001.arrow"),
}


@pytest.mark.parametrize("case", sorted(CONSUMER_CASES))
def test_bit_flip_in_a_cache_entry_is_caught_before_use(artefacts, plugins, tmp_path, case):
    cache = _cache_copy(artefacts, tmp_path)
    kind, split, name = CONSUMER_CASES[case]
    entry = _entry(cache, kind, split)
    path = entry / name
    offset = "flip-tensor-data-middle" if name.endswith(".safetensors") else "flip-last-byte"
    if name.endswith(".arrow"):
        offset = "flip-middle"
    _apply(path, offset)
    before = tree_digest(cache)
    result = _consumer(artefacts, cache, tmp_path, plugins)
    assert_clean_failure(result, name, f"kdkit cache clear {entry.name}")
    assert "plugin's authors" not in result.text
    assert tree_digest(cache) == before


def _drop_manifest(entry: Path) -> None:
    (entry / MANIFEST).unlink()


LEGACY_CACHE = {
    "dataset-arrow-truncated": (
        "datasets",
        lambda e: _apply(e / "train/data-00000-of-00001.arrow", "truncated-half"),
    ),
    "dataset-dict-garbled": ("datasets", lambda e: _garble(e / "dataset_dict.json")),
    "dataset-state-garbled": ("datasets", lambda e: _garble(e / "train" / "state.json")),
    "dataset-split-deleted": ("datasets", lambda e: shutil.rmtree(e / "validation")),
    "tokenizer-truncated": (
        "tokenizers",
        lambda e: (e / "tokenizer.json").write_text((e / "tokenizer.json").read_text()[:300]),
    ),
    "teacher-weights-truncated": (
        "teachers",
        lambda e: _apply(e / "model.safetensors", "truncated-half"),
    ),
}


@pytest.mark.parametrize("case", sorted(LEGACY_CACHE))
def test_damaged_cache_entry_without_manifest_names_the_entry(artefacts, plugins, tmp_path, case):
    cache = _cache_copy(artefacts, tmp_path)
    kind, damage = LEGACY_CACHE[case]
    entries = sorted(p for p in (cache / kind).iterdir() if not p.name.startswith("."))
    for entry in entries:  # every entry of the kind written "before manifests"
        _drop_manifest(entry)
    damage(entries[0])
    result = _consumer(artefacts, cache, tmp_path, plugins)
    assert_clean_failure(result, entries[0].name, f"kdkit cache clear {entries[0].name}")
    assert "plugin's authors" not in result.text


def test_cached_teacher_without_kdkit_json_is_rebuilt_once_and_kept(artefacts, plugins, tmp_path):
    cache = _cache_copy(artefacts, tmp_path)
    entry = _entry(cache, "teachers")
    (entry / "kdkit.json").unlink()
    first = _consumer(artefacts, cache, tmp_path / "a", plugins)
    assert first.code == 0, first.text
    assert "incomplete" in first.err and "training the teacher" in first.err
    assert (entry / "kdkit.json").is_file()  # the new copy is kept in place
    assert kdkit("cache", "--dir", str(cache), "verify", entry.name).code == 0
    second = _consumer(artefacts, cache, tmp_path / "b", plugins)
    assert second.code == 0, second.text
    assert "reusing the cached teacher" in second.err
    assert "training the teacher" not in second.err


def test_cache_ls_with_a_garbled_spec_json(artefacts, tmp_path):
    cache = _cache_copy(artefacts, tmp_path)
    entry = _entry(cache, "teachers")
    _garble(entry / "spec.json")
    result = kdkit("cache", "--dir", str(cache), "ls")
    assert_clean_failure(result, entry.name, f"kdkit cache clear {entry.name}")
    assert "DAMAGED" in result.out


def test_cache_written_before_manifests_still_loads_with_a_note(artefacts, plugins, tmp_path):
    cache = _cache_copy(artefacts, tmp_path)
    for manifest in cache.rglob(MANIFEST):
        manifest.unlink()
    result = _consumer(artefacts, cache, tmp_path, plugins)
    assert result.code == 0, result.text
    assert "loaded without an integrity check" in result.err
    listing = kdkit("cache", "--dir", str(cache), "verify")
    assert listing.code == 0 and "unchecked" in listing.out
