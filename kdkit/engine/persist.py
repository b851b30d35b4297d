"""Reloading saved models, and writing files atomically.

A saved model directory holds ``kdkit.json`` (see :mod:`kdkit.models`), the weights in
safetensors and the tokenizer. :func:`load_student` reads which registered component saved the
model and calls that component's ``load`` callback: the core never imports a model plugin.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdkit.errors import KdkitError, PluginError
from kdkit.integrity import MANIFEST, has_manifest, verify, write_manifest
from kdkit.models import KDKIT_META, MODEL_KINDS, ComponentRef, read_model_meta, saved_component

if TYPE_CHECKING:  # pragma: no cover - import for type checkers only
    from kdkit.api import Student
    from kdkit.registry import Component, Registry


def atomic_dir(target: str | Path, write: Callable[[str], Any]) -> None:
    """Write a directory atomically: ``write(tmp_dir)`` then rename it over ``target``.

    A reader (or a resumed run) sees the old directory or the complete new one, never a half
    written one, even if the process is killed mid-write.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp", dir=target.parent))
    try:
        write(str(tmp))
        old = target.with_name(f".{target.name}.old")
        if target.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(target, old)
        os.replace(tmp, target)
        if old.exists():
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically (write a sibling, then ``os.replace``). The sibling's name is
    unique per process *and* thread, so concurrent writers of one file never share it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}-{threading.get_ident()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def publish_entry(tmp: Path, directory: Path, meta: dict[str, Any], artefact: str) -> None:
    """Finish a cache entry built in the private folder ``tmp``: write its ``meta.json`` and
    integrity manifest, then move it to ``directory`` — unless a concurrent run published it
    first, in which case theirs is kept and ``tmp`` is removed."""
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    write_manifest(tmp, artefact)
    directory.parent.mkdir(parents=True, exist_ok=True)
    if directory.exists():  # a concurrent run built it first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
        return
    os.replace(tmp, directory)


def find_model_dir(path: str | Path) -> Path:
    """A model directory from a model directory or a run directory (its best, else last model)."""
    p = Path(path)
    for cand in (p, p / "best" / "model", p / "last" / "model", p / "model"):
        # a manifest without kdkit.json: the model is damaged, and verify says which file is gone
        if (cand / KDKIT_META).is_file() or has_manifest(cand):
            return cand
    raise KdkitError(
        f"no saved kdkit model in {p}",
        where=str(p),
        fix="pass a run directory of a finished run (it has best/model/) or a directory written "
        "by Student.save / `kdkit teach`",
    )


def model_component(directory: str | Path, registry: Registry) -> Component:
    """The registered component that reloads the model in ``directory`` (from its ``kdkit.json``).

    A legacy file (``"kind": NAME``, no ``component``) maps to the component called ``NAME``
    that can reload models: a student first, then a teacher.
    """
    directory = Path(directory)
    where = str(directory / KDKIT_META)
    meta = read_model_meta(directory)
    ref = saved_component(meta)
    if ref is None:
        legacy = meta.get("kind")
        if not isinstance(legacy, str) or not legacy:
            raise KdkitError(
                f"{where} does not say which component saved the model",
                where=where,
                fix='the model\'s save() must write kdkit.json with "component": {"kind": '
                '"student", "name": NAME} (kdkit.models.write_model_meta)',
            )
        for kind in MODEL_KINDS:
            found = registry.components[kind].get(legacy)
            if found is not None and found.load is not None:
                return found
        ref = ComponentRef(MODEL_KINDS[0], legacy)
    found = registry.components.get(ref.kind, {}).get(ref.name)
    if found is None:
        raise KdkitError(
            f"the model in {directory} was saved by the {ref}, which is not installed",
            where=where,
            fix=f"install the distribution that provides the {ref} (pip install ...), then check "
            "that `kdkit plugins` lists it"
            + (
                f"; these plugins failed to load: {', '.join(f.plugin for f in registry.failures)}"
                if registry.failures
                else ""
            ),
        )
    return found


def load_student(path: str | Path, registry: Registry | None = None) -> Student:
    """Reload a saved student (or kdkit-trained teacher) for inference or further training.

    Args:
        path: a model directory, or a run directory (its best, else last, model).
        registry: where to find the component that saved the model (default: the installed
            plugins, :func:`kdkit.discovery.load_plugins`).

    Returns:
        The :class:`kdkit.api.Student` the component's ``load`` callback rebuilt.
    """
    directory = find_model_dir(path)
    verified = verify_model_dir(directory)
    if registry is None:
        from kdkit.discovery import load_plugins

        registry = load_plugins().registry
    component = model_component(directory, registry)
    try:
        return component.reload(str(directory))
    except PluginError as exc:
        # intact files (verified), or no failure while reading (no load callback at all): the
        # plugin's error stands; otherwise the reader failed on files nothing vouches for
        if verified or exc.__cause__ is None:
            raise
        raise KdkitError(
            f"the saved model cannot be reloaded: {exc.what}",
            where=str(directory),
            fix="its files are probably damaged (the directory has no integrity manifest to "
            "tell): use another copy (a run keeps best/model, last/model and its checkpoints) or "
            "save the model again; KDKIT_DEBUG=1 shows the traceback",
        ) from None


def cache_entry_of(directory: str | Path) -> tuple[str, str] | None:
    """``(kind, key)`` when ``directory`` is an entry of kdkit's cache
    (``CACHE/<kind>/<key>``, e.g. ``teachers/3fa2...``), else ``None``."""
    p = Path(directory)
    kinds = ("teacher-outputs", "teachers", "tokenizers", "built", "datasets")
    return (p.parent.name, p.name) if p.parent.name in kinds else None


def damaged_fix(directory: str | Path) -> str:
    """How to repair a damaged artefact directory: clear the cache entry, or save it again."""
    entry = cache_entry_of(directory)
    if entry is not None:
        return (
            f"delete the cache entry with `kdkit cache clear {entry[1]}`; kdkit builds it "
            "again on the next run"
        )
    return (
        "use another copy (a run keeps best/model, last/model and its checkpoints) or save the "
        f"model again; if you changed a file on purpose, delete {MANIFEST} to accept the files"
    )


def verify_model_dir(directory: str | Path) -> bool:
    """Check a saved model's files against its manifest (``False``: it has none; see
    :func:`kdkit.integrity.verify`)."""
    entry = cache_entry_of(directory)
    artefact = f"cache entry {entry[0]}/{entry[1]}" if entry else "saved model"
    return verify(directory, artefact=artefact, fix=damaged_fix(directory))
