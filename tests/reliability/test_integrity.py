"""kdkit.integrity: manifests find every flipped bit, truncation and deletion; they are atomic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdkit.integrity import MANIFEST, IntegrityError, build_manifest, check, verify, write_manifest


def _artefact(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "a.bin").write_bytes(bytes(range(256)) * 3)
    (root / "sub" / "b.json").write_text('{"x": 1}')
    write_manifest(root, "test artefact")
    return root


def test_manifest_lists_every_file_with_size_and_sha256(tmp_path):
    import hashlib

    root = _artefact(tmp_path / "art")
    manifest = json.loads((root / MANIFEST).read_text())
    assert manifest["artefact"] == "test artefact" and manifest["algorithm"] == "sha256"
    assert manifest["files"] == {
        "a.bin": {
            "bytes": 768,
            "sha256": hashlib.sha256(bytes(range(256)) * 3).hexdigest(),
        },
        "sub/b.json": {"bytes": 8, "sha256": hashlib.sha256(b'{"x": 1}').hexdigest()},
    }
    assert check(root) == [] and verify(root, artefact="x", fix="y") is True
    assert build_manifest(root, "test artefact") == manifest
    assert not list(root.glob(".*tmp*"))  # written through a temporary name, then renamed


def test_every_single_bit_flip_is_detected(tmp_path):
    root = _artefact(tmp_path / "art")
    data = (root / "a.bin").read_bytes()
    for i in range(0, len(data), 7):  # every 7th byte, each of its 8 bits
        for bit in range(8):
            flipped = bytearray(data)
            flipped[i] ^= 1 << bit
            (root / "a.bin").write_bytes(bytes(flipped))
            damage = check(root)
            assert damage is not None and [d.file for d in damage] == ["a.bin"]
    (root / "a.bin").write_bytes(data)
    assert check(root) == []


def test_truncation_deletion_and_the_message(tmp_path):
    root = _artefact(tmp_path / "art")
    (root / "a.bin").write_bytes(b"short")
    (root / "sub" / "b.json").unlink()
    damage = check(root)
    assert damage is not None
    assert [(d.file, d.reason) for d in damage] == [
        ("a.bin", "has 5 bytes, 768 when it was written"),
        ("sub/b.json", "is missing"),
    ]
    with pytest.raises(IntegrityError) as err:
        verify(root, artefact="cache entry teachers/K", fix="kdkit cache clear K")
    assert err.value.where == str(root / "a.bin")
    assert "cache entry teachers/K is damaged: a.bin has 5 bytes" in err.value.what
    assert "(and 1 more file(s))" in err.value.what and err.value.fix == "kdkit cache clear K"
    assert err.value.exit_code == 2


@pytest.mark.parametrize("text", ["", "null", "{}", '{"files": 3}', '{"files": {"a": {}}}'])
def test_a_damaged_manifest_is_an_integrity_error(tmp_path, text):
    root = _artefact(tmp_path / "art")
    (root / MANIFEST).write_text(text)
    with pytest.raises(IntegrityError, match="integrity manifest is damaged") as err:
        verify(root, artefact="checkpoint", fix="resume from previous")
    assert err.value.where == str(root / MANIFEST) and err.value.fix == "resume from previous"


def test_no_manifest_loads_with_a_note_once(tmp_path, capsys):
    (tmp_path / "old").mkdir()
    assert check(tmp_path / "old") is None
    assert verify(tmp_path / "old", artefact="x", fix="y") is False
    assert verify(tmp_path / "old", artefact="x", fix="y") is False
    err = capsys.readouterr().err
    assert err.count("loaded without an integrity check") == 1
