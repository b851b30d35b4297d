"""Checkpoints: everything needed to resume a run exactly, written atomically.

``RUN_DIR/checkpoints/last/`` holds

* ``student.safetensors`` and ``method.safetensors`` — the trainable weights;
* ``state.safetensors`` + ``state.json`` — optimiser, schedule, trainer counters and the random
  state, split into tensors (safetensors) and plain values (JSON): no pickle anywhere;
* ``kdkit-manifest.json`` — the size and SHA-256 of each file (:mod:`kdkit.integrity`), checked
  before a resume reads anything.

The checkpoint before it is kept in ``RUN_DIR/checkpoints/previous/`` until the new one has been
written *and verified* (its files re-read against its manifest), so a damaged last checkpoint is
never the only one: ``kdkit run --resume RUN_DIR/checkpoints/previous`` resumes from it.

``RUN_DIR/best/`` holds the best student so far as a reloadable model (``best/model``: the
student's own ``save`` format, ``save_pretrained`` for ``transformers`` students).
Every directory is written beside its target and renamed over it, so a kill at any moment
leaves the previous complete checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from kdkit.api import Student
from kdkit.engine.persist import atomic_dir
from kdkit.errors import KdkitError
from kdkit.integrity import has_manifest, verify, write_manifest

#: The checkpoints a run keeps, newest first (``RUN_DIR/checkpoints/<name>``).
CHECKPOINTS = ("last", "previous")

_TENSOR = "__tensor__"


def flatten(value: Any, tensors: dict[str, torch.Tensor], prefix: str = "t") -> Any:
    """Replace every tensor in a nested structure by a reference; collect tensors by key."""
    if isinstance(value, torch.Tensor):
        key = f"{prefix}.{len(tensors)}"
        tensors[key] = value.detach().cpu().contiguous()
        return {_TENSOR: key}
    if isinstance(value, dict):
        return {
            "__dict__": [
                [flatten(k, tensors, prefix), flatten(v, tensors, prefix)] for k, v in value.items()
            ]
        }
    if isinstance(value, (list, tuple)):
        return {
            "__list__" if isinstance(value, list) else "__tuple__": [
                flatten(v, tensors, prefix) for v in value
            ]
        }
    return value


def unflatten(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten`."""
    if isinstance(value, dict):
        if _TENSOR in value:
            return tensors[value[_TENSOR]]
        if "__dict__" in value:
            return {unflatten(k, tensors): unflatten(v, tensors) for k, v in value["__dict__"]}
        if "__list__" in value:
            return [unflatten(v, tensors) for v in value["__list__"]]
        if "__tuple__" in value:
            return tuple(unflatten(v, tensors) for v in value["__tuple__"])
    return value


def save_state(directory: str, state: dict[str, Any]) -> None:
    """Write a nested state (tensors and plain values) as ``state.safetensors`` + ``state.json``."""
    tensors: dict[str, torch.Tensor] = {}
    plain = flatten(state, tensors)
    save_file(tensors, os.path.join(directory, "state.safetensors"))
    with open(os.path.join(directory, "state.json"), "w", encoding="utf-8") as fh:
        json.dump(plain, fh)


def load_state(directory: str) -> dict[str, Any]:
    """Read what :func:`save_state` wrote."""
    tensors = load_file(os.path.join(directory, "state.safetensors"))
    with open(os.path.join(directory, "state.json"), encoding="utf-8") as fh:
        return unflatten(json.load(fh), tensors)


def write_checkpoint(
    run_dir: str | Path,
    student: torch.nn.Module,
    method: torch.nn.Module,
    state: dict[str, Any],
    *,
    rotate: bool = True,
) -> Path:
    """Write ``RUN_DIR/checkpoints/last`` (weights + resumable state + manifest).

    ``rotate=False`` (a second checkpoint of the same step, after its evaluation) replaces
    ``last`` and keeps ``previous`` as it is, so ``previous`` stays an earlier step.

    The new checkpoint is written into a private directory and verified against its manifest
    (every file re-read); only then does ``last`` become ``previous`` (the older ``previous`` is
    dropped) and the new directory become ``last``. A kill at any moment leaves at least one
    complete, verified checkpoint (``last``, or ``previous`` alone between the two renames,
    which :func:`checkpoint_dir` falls back to).
    """
    base = Path(run_dir) / "checkpoints"
    target, previous = base / "last", base / "previous"
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".last.tmp", dir=base))
    try:
        save_model(student, os.path.join(tmp, "student.safetensors"))
        save_model(method, os.path.join(tmp, "method.safetensors"))
        save_state(str(tmp), state)
        write_manifest(tmp, "checkpoint")
        verify(tmp, artefact="new checkpoint", fix="check the disk (is it full or failing?)")
        if target.exists() and rotate:
            if previous.exists():
                shutil.rmtree(previous)
            os.replace(target, previous)
        elif target.exists():  # same step: the new one replaces it (a kill here: previous)
            old = base / ".last.old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
            return target
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def checkpoint_dir(resume: str | Path) -> tuple[Path, Path]:
    """``(run directory, checkpoint directory)`` of ``--resume PATH``.

    ``PATH`` is a run directory (its ``checkpoints/last``; ``checkpoints/previous`` when a kill
    between the two renames of :func:`write_checkpoint` left no ``last``) or one of its
    checkpoints (``RUN_DIR/checkpoints/previous``).
    """
    path = Path(resume)
    if path.parent.name == "checkpoints" and path.name in CHECKPOINTS:
        return path.parent.parent, path
    last, previous = path / "checkpoints" / "last", path / "checkpoints" / "previous"
    if not last.exists() and (previous / "state.json").is_file():
        return path, previous
    return path, last


def _damaged_fix(source: Path) -> str:
    run_dir = source.parent.parent
    previous = run_dir / "checkpoints" / "previous"
    if source.name == "last" and (previous / "state.json").is_file():
        return (
            f"resume from the checkpoint before it: `kdkit run --resume {previous}` (the damaged "
            "one is set aside); or start the run again in a new output_dir"
        )
    return "start the run again in a new output_dir (no intact checkpoint is left)"


def preflight(source: Path) -> None:
    """Check a checkpoint before a resume builds anything: it exists, its files match its
    manifest, and ``state.json`` is a state (cheap: the tensors are read later)."""
    if not (source / "state.json").is_file() and not has_manifest(source):
        raise KdkitError(
            "the run has no checkpoint to resume from",
            where=str(source),
            fix="the run stopped before its first checkpoint: start it again with the same "
            "command without --resume (the directory holds nothing to keep), or lower "
            "training.save_every so checkpoints come sooner",
        )
    verify(source, artefact="checkpoint", fix=_damaged_fix(source))
    try:
        plain = json.loads((source / "state.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise KdkitError(
            f"the checkpoint's state cannot be read: {type(exc).__name__}: {_short(exc)}",
            where=str(source / "state.json"),
            fix="the checkpoint's state is damaged: " + _damaged_fix(source),
        ) from None
    keys = (
        [k for k, _ in plain["__dict__"] if isinstance(k, str)]
        if isinstance(plain, dict)
        and isinstance(plain.get("__dict__"), list)
        and all(isinstance(kv, list) and len(kv) == 2 for kv in plain["__dict__"])
        else None
    )
    missing = [k for k in STATE_KEYS if keys is None or k not in keys]
    if missing:
        raise KdkitError(
            f"the checkpoint's state is not a kdkit state (no {', '.join(missing)})",
            where=str(source / "state.json"),
            fix="the checkpoint's state is damaged or not kdkit's: " + _damaged_fix(source),
        )


def read_checkpoint(
    run_dir: str | Path,
    student: torch.nn.Module,
    method: torch.nn.Module,
    source: str | Path | None = None,
) -> dict[str, Any]:
    """Load weights into ``student`` and ``method``; return the resumable state.

    ``source`` is the checkpoint directory (default: :func:`checkpoint_dir` of ``run_dir``). Its
    files are checked against the manifest before anything is read; a damaged file, a state of
    the wrong shape or weights of another model raise :class:`KdkitError` naming the file.
    """
    source = Path(source) if source is not None else checkpoint_dir(run_dir)[1]
    preflight(source)
    current = "student.safetensors"
    try:
        load_model(student, str(source / current))
        if any(True for _ in method.parameters()) or method.state_dict():
            current = "method.safetensors"
            load_model(method, str(source / current))
        current = "state.safetensors"
        tensors = load_file(str(source / current))
        current = "state.json"
        with open(source / current, encoding="utf-8") as fh:
            state = unflatten(json.load(fh), tensors)
    except Exception as exc:  # safetensors raises its own SafetensorError, torch RuntimeError
        raise KdkitError(
            f"the checkpoint cannot be read: {type(exc).__name__}: {_short(exc)}",
            where=str(source / current),
            fix="the run's configuration must be the one it was started with (a changed model "
            "shape cannot resume); if the files are damaged: " + _damaged_fix(source),
        ) from None
    _check_state(state, source)
    if source.name == "previous":  # resuming past a damaged last: set it aside, keep it
        last = source.parent / "last"
        if last.exists():
            aside = source.parent / "damaged"
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(last, aside)
    return state


def _short(exc: BaseException, limit: int = 300) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[:limit] + "..."


#: The entries of a checkpoint's state and the type each must have.
STATE_KEYS = {"trainer": dict, "optimizer": dict, "schedule": dict, "rng": dict}


def _check_state(state: Any, source: Path) -> None:
    """A checkpoint's state has the entries :meth:`Trainer.restore` reads, of the right types."""
    where = str(source / "state.json")
    fix = "the checkpoint's state is damaged or not kdkit's: " + _damaged_fix(source)
    if not isinstance(state, dict):
        raise KdkitError(
            f"the checkpoint's state is {type(state).__name__}, not an object", where=where, fix=fix
        )
    for key, kind in STATE_KEYS.items():
        if not isinstance(state.get(key), kind):
            raise KdkitError(
                f"the checkpoint's state has no valid '{key}' entry", where=where, fix=fix
            )


def write_model(target: str | Path, student: Student) -> Path:
    """Atomically save a reloadable student (its own ``save`` format) to ``target``."""

    def write(tmp: str) -> None:
        student.save(tmp)
        write_manifest(tmp, "saved model")

    atomic_dir(target, write)
    return Path(target)
