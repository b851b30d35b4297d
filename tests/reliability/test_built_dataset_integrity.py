"""A built offline dataset in the cache (CACHE/built/KEY) carries a manifest: a flipped byte in
one of its splits is refused before the rows are read, naming the entry and `kdkit cache clear`."""

from __future__ import annotations

import shutil

import pytest

from kdkit.data.corpus import stdlib_sample
from kdkit.errors import KdkitError
from kdkit.plugins.tasks.exception import ExceptionOptions, ExceptionTask


def test_a_flipped_byte_in_a_built_split_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("KDKIT_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "src"
    src.mkdir()
    for p in stdlib_sample():
        shutil.copy(p, src / p.name)

    def task() -> ExceptionTask:
        return ExceptionTask(ExceptionOptions(source=[str(src)], labels="top-6"))

    built = task()._ensure_built()
    assert (built / "kdkit-manifest.json").is_file()
    assert task()._ensure_built() == built  # intact: reused
    split = built / "valid.jsonl"
    data = bytearray(split.read_bytes())
    i = data.index(b"Error")
    data[i] ^= 0x20  # "Error" -> "error": still valid JSON, another label
    split.write_bytes(bytes(data))
    with pytest.raises(KdkitError) as err:
        task()._ensure_built()
    assert "valid.jsonl" in str(err.value)
    assert f"built/{built.name}" in str(err.value) and "kdkit cache clear" in err.value.fix
