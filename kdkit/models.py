"""What every saved model shares, whatever plugin made it: ``kdkit.json`` and parameter counts.

A model directory (a student's ``save``, a teacher ``kdkit teach`` wrote) holds the model's own
files (weights in safetensors, config, tokenizer) and ``kdkit.json``::

    {"component": {"kind": "student", "name": "gru"},   # who can reload it (see load_student)
     "name": "gru-1.5M", "family": "gru",               # ModelInfo.name / .family
     "labels": ["ValueError", ...],                      # label names, in class order
     ...}                                                # anything else the plugin keeps

``component`` names the registered component (``kind`` ``student`` or ``teacher``, and its name)
whose ``load`` callback rebuilds the model; :func:`kdkit.engine.persist.load_student` finds that
callback through the registry. Plugins write the file with :func:`write_model_meta`.

Files written before kdkit recorded the component have ``"kind": NAME`` instead (``hf`` or
``gru``); they are read as the component called ``NAME`` (a student first, then a teacher).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kdkit.errors import KdkitError

#: The metadata file beside a saved model's own files.
KDKIT_META = "kdkit.json"

#: Component kinds whose saved models kdkit reloads (``load_student``), in lookup order.
MODEL_KINDS = ("student", "teacher")


@dataclass(frozen=True)
class ComponentRef:
    """The registered component that saved a model: its kind and its name."""

    kind: str
    name: str

    def as_dict(self) -> dict[str, str]:
        """The ``component`` entry of ``kdkit.json``."""
        return {"kind": self.kind, "name": self.name}

    def __str__(self) -> str:
        return f"{self.kind} '{self.name}'"


def count_parameters(module: torch.nn.Module) -> int:
    """Exact number of parameters (shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for p in module.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def write_model_meta(
    directory: str | Path, component: ComponentRef, fields: Mapping[str, Any]
) -> None:
    """Write ``DIRECTORY/kdkit.json``: ``component`` first, then ``fields`` (name, family, labels...).

    ``fields`` may not contain ``component`` (it is the argument) nor the legacy ``kind`` key.
    """
    clash = {"component", "kind"} & set(fields)
    if clash:
        raise ValueError(f"kdkit.json fields may not set {sorted(clash)}")
    os.makedirs(directory, exist_ok=True)
    meta = {"component": component.as_dict(), **fields}
    with open(os.path.join(directory, KDKIT_META), "w", encoding="utf-8") as fh:
        json.dump(meta, fh, indent=2)


def read_model_meta(directory: str | Path) -> dict[str, Any]:
    """The parsed ``kdkit.json`` of a model directory (``{}`` when there is none)."""
    path = Path(directory) / KDKIT_META
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KdkitError(
            f"cannot read {path}: {exc}",
            where=str(path),
            fix="the model directory is damaged: save the model again",
        ) from None
    if not isinstance(meta, dict):
        raise KdkitError(
            f"{path} is not a JSON object",
            where=str(path),
            fix="the model directory is damaged: save the model again",
        )
    return meta


def model_fields(meta: Mapping[str, Any], *known: str) -> dict[str, Any]:
    """``meta`` without the keys kdkit manages (``component``, legacy ``kind``) and ``known``.

    A loader uses it to keep what it does not interpret itself (labels, provenance...) so that a
    reloaded model saves the same ``kdkit.json`` again.
    """
    skip = {"component", "kind", *known}
    return {k: v for k, v in meta.items() if k not in skip}


def saved_component(meta: Mapping[str, Any]) -> ComponentRef | None:
    """The component recorded in ``kdkit.json`` (``None`` for a legacy file: see the module doc)."""
    entry = meta.get("component")
    if (
        isinstance(entry, Mapping)
        and isinstance(entry.get("kind"), str)
        and isinstance(entry.get("name"), str)
    ):
        return ComponentRef(entry["kind"], entry["name"])
    return None


def label_maps(labels: Sequence[str] | None, num_labels: int) -> dict[str, dict[Any, Any]] | None:
    """``{"id2label": {0: name, ...}, "label2id": {name: 0, ...}}`` for ``labels``, if they fit.

    ``None`` when ``labels`` is missing or does not have one name per class (a head kdkit did not
    give the task's labels): the config then keeps what it had.
    """
    if not labels or len(labels) != num_labels:
        return None
    names = [str(label) for label in labels]
    return {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}
