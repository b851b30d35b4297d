"""Integrity manifests: every artefact directory kdkit writes carries the size and SHA-256 of
each of its files, and every load checks them before the data is used.

safetensors, Arrow and JSON have no checksum of their own: a flipped bit in a tensor loads
without a sound and changes results (a teacher cache's flipped shard changed the teacher's
reported metrics). So each artefact directory kdkit writes — checkpoints, saved models, cached
teachers, teacher-output cache entries, dataset caches, tokenizers — gets a
``kdkit-manifest.json``::

    {"format": 1, "artefact": "checkpoint", "algorithm": "sha256",
     "files": {"student.safetensors": {"bytes": 123, "sha256": "ab..."}, ...}}

written inside the directory *before* the directory is renamed into place (so the manifest is
as atomic as the artefact), and :func:`verify` checks it on every load: the sizes first (free),
then the hashes. A mismatch raises :class:`IntegrityError` naming the file, the artefact and
the fix. A directory without a manifest (written by a kdkit that had none) still loads, with a
one-line note on stderr.

SHA-256 runs at about 2 GB/s on one core with the SHA extensions of current x86 CPUs
(``docs/reliability.md`` gives the measured cost next to the loads).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdkit.errors import KdkitError

#: The manifest's file name inside an artefact directory.
MANIFEST = "kdkit-manifest.json"
#: Bump when the manifest layout changes.
FORMAT = 1
#: Files never listed: the manifest itself and a run directory's lock.
SKIP = frozenset({MANIFEST, ".kdkit-run.lock"})
_CHUNK = 1 << 20
_noted: set[str] = set()


class IntegrityError(KdkitError):
    """An artefact's files do not match its manifest (damaged, truncated, edited or missing)."""


@dataclass(frozen=True)
class Damage:
    """One file of an artefact that does not match its manifest."""

    file: str  # relative to the artefact directory
    reason: str


def hash_file(path: str | os.PathLike[str]) -> str:
    """The SHA-256 hex digest of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _files(directory: Path) -> Iterable[Path]:
    for path in sorted(directory.rglob("*")):
        if path.is_file() and path.name not in SKIP and not path.is_symlink():
            yield path


def build_manifest(directory: str | os.PathLike[str], artefact: str) -> dict[str, Any]:
    """The manifest of every file under ``directory`` (recursively), as :func:`write_manifest`
    writes it."""
    root = Path(directory)
    files = {
        p.relative_to(root).as_posix(): {"bytes": p.stat().st_size, "sha256": hash_file(p)}
        for p in _files(root)
    }
    return {"format": FORMAT, "artefact": artefact, "algorithm": "sha256", "files": files}


def write_manifest(directory: str | os.PathLike[str], artefact: str) -> Path:
    """Hash every file under ``directory`` and write ``directory/kdkit-manifest.json``
    atomically (a sibling file, then ``os.replace``). Call it last, once the files are final."""
    root = Path(directory)
    manifest = build_manifest(root, artefact)
    path = root / MANIFEST
    tmp = root / f".{MANIFEST}.tmp{os.getpid()}"
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)
    return path


def has_manifest(directory: str | os.PathLike[str]) -> bool:
    """Whether ``directory`` holds a manifest."""
    return (Path(directory) / MANIFEST).is_file()


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The parsed manifest of ``directory`` (``None`` when it has none).

    Raises :class:`IntegrityError` when the manifest itself is unreadable.
    """
    path = Path(directory) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        files = manifest["files"]
        ok = isinstance(files, dict) and all(
            isinstance(v, dict)
            and isinstance(v.get("bytes"), int)
            and isinstance(v.get("sha256"), str)
            for v in files.values()
        )
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        ok = False
    if not ok:
        raise IntegrityError(
            f"the integrity manifest {MANIFEST} is damaged", where=str(path), fix="(set by verify)"
        )
    return manifest


def check(directory: str | os.PathLike[str]) -> list[Damage] | None:
    """Every file of ``directory`` that does not match its manifest (``[]``: all intact;
    ``None``: there is no manifest). Files the manifest does not list are not checked."""
    root = Path(directory)
    manifest = read_manifest(root)
    if manifest is None:
        return None
    damage: list[Damage] = []
    for name, entry in sorted(manifest["files"].items()):
        path = root / name
        if not path.is_file():
            damage.append(Damage(name, "is missing"))
            continue
        size = path.stat().st_size
        if size != entry["bytes"]:
            damage.append(Damage(name, f"has {size} bytes, {entry['bytes']} when it was written"))
        elif hash_file(path) != entry["sha256"]:
            damage.append(Damage(name, "changed since it was written (its SHA-256 differs)"))
    return damage


def verify(
    directory: str | os.PathLike[str], *, artefact: str, fix: str, note: bool = True
) -> bool:
    """Check ``directory`` against its manifest before its files are used.

    Args:
        directory: the artefact directory.
        artefact: what it is, for the message ("checkpoint", "cache entry teachers/KEY", ...).
        fix: what the user should do when it is damaged.
        note: print a one-line note (once per directory) when there is no manifest.

    Returns:
        ``True`` when every listed file matches, ``False`` when there is no manifest (an
        artefact written by a kdkit without manifests: it loads unchecked).

    Raises:
        IntegrityError: a file is missing, has another size or another hash, or the manifest
            is unreadable; the message names the file, the artefact and ``fix``.
    """
    root = Path(directory)
    try:
        damage = check(root)
    except IntegrityError as exc:
        raise IntegrityError(
            f"the {artefact} cannot be checked: its integrity manifest is damaged",
            where=exc.where,
            fix=fix,
        ) from None
    if damage is None:
        if note and str(root) not in _noted:
            _noted.add(str(root))
            print(
                f"kdkit: note: {root} has no {MANIFEST} (written by an older kdkit): "
                "loaded without an integrity check",
                file=sys.stderr,
            )
        return False
    if damage:
        first = damage[0]
        more = f" (and {len(damage) - 1} more file(s))" if len(damage) > 1 else ""
        raise IntegrityError(
            f"the {artefact} is damaged: {first.file} {first.reason}{more}",
            where=str(root / first.file),
            fix=fix,
        )
    return True
