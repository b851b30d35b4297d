"""Checkpoints: everything needed to resume a run exactly, written atomically.

``RUN_DIR/checkpoints/last/`` holds

* ``student.safetensors`` and ``method.safetensors`` — the trainable weights;
* ``state.safetensors`` + ``state.json`` — optimiser, schedule, trainer counters and the random
  state, split into tensors (safetensors) and plain values (JSON): no pickle anywhere.

``RUN_DIR/best/`` holds the best student so far as a reloadable model (``best/model``: the
student's own ``save`` format, ``save_pretrained`` for ``transformers`` students).
Every directory is written beside its target and renamed over it, so a kill at any moment
leaves the previous complete checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from kdkit.api import Student
from kdkit.engine.persist import atomic_dir
from kdkit.errors import KdkitError

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
) -> Path:
    """Atomically write ``RUN_DIR/checkpoints/last`` (weights + resumable state)."""
    target = Path(run_dir) / "checkpoints" / "last"

    def write(tmp: str) -> None:
        save_model(student, os.path.join(tmp, "student.safetensors"))
        save_model(method, os.path.join(tmp, "method.safetensors"))
        save_state(tmp, state)

    atomic_dir(target, write)
    return target


def read_checkpoint(
    run_dir: str | Path, student: torch.nn.Module, method: torch.nn.Module
) -> dict[str, Any]:
    """Load weights into ``student`` and ``method``; return the resumable state."""
    source = Path(run_dir) / "checkpoints" / "last"
    if not (source / "state.json").is_file():
        raise KdkitError(
            "the run has no checkpoint to resume from",
            where=str(source),
            fix="the run stopped before its first checkpoint: start it again without --resume "
            "(or lower training.save_every so checkpoints come sooner)",
        )
    try:
        load_model(student, str(source / "student.safetensors"))
        if any(True for _ in method.parameters()) or method.state_dict():
            load_model(method, str(source / "method.safetensors"))
        return load_state(str(source))
    except (OSError, ValueError, RuntimeError, json.JSONDecodeError) as exc:
        raise KdkitError(
            f"the checkpoint cannot be read: {type(exc).__name__}: {exc}",
            where=str(source),
            fix="the run's configuration must be the one it was started with; if the files are "
            "damaged, start the run again in a new output_dir",
        ) from None


def write_model(target: str | Path, student: Student) -> Path:
    """Atomically save a reloadable student (its own ``save`` format) to ``target``."""
    atomic_dir(target, student.save)
    return Path(target)
