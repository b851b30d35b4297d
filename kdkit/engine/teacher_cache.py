"""The teacher signal: the teacher run live, or its outputs computed once and read from a cache.

A KD method needs the same teacher outputs for the same rows every epoch. Computing them once
makes a KD epoch cost about what an FT epoch costs. The cache lives in
``CACHE/teacher-outputs/<key>/`` as safetensors shards plus ``meta.json``; the key hashes

* the teacher's fingerprint (weights + tokenizer + config),
* the data fingerprint (the task's),
* the split, what is cached (:class:`Needs`) and ``max_length``.

What is cached: logits, pooled layer features and the head's feature — ``[N, C]`` / ``[N, H]``
per split, small at any size. Token states (``hidden_layers``, for CKD-like methods) are
``[N, L, H]`` per layer — gigabytes for a real dataset — so a method that asks for them gets a
teacher that runs live (and the run records ``teacher_signal: live``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from kdkit.api import Batch, Encoded, ModelOutput, Needs
from kdkit.errors import KdkitError

#: Bump when the cache layout changes (older entries are then simply not found).
CACHE_VERSION = 1
#: Rows per safetensors shard.
SHARD_ROWS = 4096


def cacheable(needs: Needs) -> bool:
    """Whether every output in ``needs`` is cached (token states are not)."""
    return not needs.hidden_layers


def cache_key(teacher_fp: str, data_fp: str, split: str, needs: Needs, max_length: int) -> str:
    """The directory name of one cache entry."""
    what = {"teacher": teacher_fp, "data": data_fp, "split": split, "needs": _needs_json(needs),
            "max_length": max_length, "version": CACHE_VERSION}  # fmt: skip
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:24]


def _needs_json(needs: Needs) -> dict[str, Any]:
    d = asdict(needs)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


class LiveTeacher:
    """Runs the teacher on each batch (``eval()``, ``no_grad``)."""

    kind = "live"

    def __init__(self, teacher: Any, needs: Needs, device: torch.device) -> None:
        self.teacher = teacher
        self.needs = needs
        self.device = device

    def __call__(self, batch: Batch) -> ModelOutput:
        """Teacher outputs for a batch whose ``teacher`` tokenisation is present."""
        if batch.teacher is None:
            raise RuntimeError("a live teacher needs the batch's teacher tokenisation")
        with torch.no_grad():
            return self.teacher(batch.teacher.to(self.device), self.needs)


class CachedTeacher:
    """Teacher outputs of a whole split, held in memory, looked up by ``Batch.index``."""

    kind = "cache"

    def __init__(self, tensors: dict[str, torch.Tensor], needs: Needs, device: torch.device,
                 directory: Path) -> None:  # fmt: skip
        self.tensors = {k: v.to(device) for k, v in tensors.items()}
        self.needs = needs
        self.directory = directory

    @property
    def logits(self) -> torch.Tensor:
        """``[N, C]`` teacher logits of the whole split."""
        return self.tensors["logits"]

    def __call__(self, batch: Batch) -> ModelOutput:
        """The cached outputs of ``batch.index`` rows."""
        idx = batch.index.to(self.logits.device)
        pooled = {int(k.split(".")[1]): v[idx] for k, v in self.tensors.items()
                  if k.startswith("pooled.")}  # fmt: skip
        emb = self.tensors.get("embedding")
        return ModelOutput(logits=self.logits[idx], pooled=pooled,
                           embedding=None if emb is None else emb[idx])  # fmt: skip


def _check_meta(meta: dict[str, Any], expect: dict[str, Any], directory: Path) -> None:
    for field in ("teacher_fingerprint", "data_fingerprint", "split", "max_length", "needs"):
        if meta.get(field) != expect[field]:
            raise KdkitError(
                f"the teacher cache does not match this run: {field} is {meta.get(field)!r} in "
                f"the cache but {expect[field]!r} for this run",
                where=str(directory),
                fix="point cache.teacher_outputs at the cache of this teacher and data, remove "
                "the setting to use the automatic key, or delete that cache with "
                f"`kdkit cache clear {directory.name}`",
            )


def load_or_build(
    *,
    teacher: Any,
    needs: Needs,
    split_name: str,
    encoded_rows: Any,
    num_rows: int,
    data_fp: str,
    max_length: int,
    cache_root: Path,
    device: torch.device,
    batch_size: int,
    explicit_dir: str | None = None,
    progress: bool = True,
    dist: Any = None,
) -> CachedTeacher:
    """Load the cached teacher outputs of a split, computing and storing them when missing.

    Args:
        encoded_rows: an object with ``collate(rows) -> Encoded`` (the teacher tokenisation),
            used only when the cache must be built.
        explicit_dir: a directory given by the user (``cache.teacher_outputs``); it must match.
        dist: a :class:`kdkit.engine.distributed.Dist` over several ranks: rank 0 decides
            whether the entry exists; a build is shared out (each rank runs the teacher on its
            batches, each writes its shard files, rank 0 writes ``meta.json``) and gives the
            same entry, tensor for tensor, as one process.
    """
    teacher_fp = teacher.fingerprint()
    expect = {"teacher_fingerprint": teacher_fp, "data_fingerprint": data_fp, "split": split_name,
              "max_length": max_length, "needs": _needs_json(needs)}  # fmt: skip
    key = cache_key(teacher_fp, data_fp, split_name, needs, max_length)
    directory = (
        Path(explicit_dir) / split_name if explicit_dir else cache_root / "teacher-outputs" / key
    )
    meta_path = directory / "meta.json"
    several = dist is not None and dist.enabled
    exists = dist.on_main(meta_path.is_file) if several else meta_path.is_file()
    if several and exists and not meta_path.is_file():
        raise KdkitError("rank 0 sees a teacher cache this rank does not", where=str(directory),
                         fix="put cache.dir (or KDKIT_CACHE) on storage every node shares, as "
                         "docs/distributed.md says")  # fmt: skip
    if exists:
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            raise KdkitError("the teacher cache's meta.json is damaged", where=str(meta_path),
                             fix=f"delete it with `kdkit cache clear {directory.name}`; it is "
                             "rebuilt on the next run") from None  # fmt: skip
        _check_meta(meta, expect, directory)
        if meta.get("rows") != num_rows:
            raise KdkitError(f"the teacher cache has {meta.get('rows')} rows, the split {num_rows}",
                             where=str(directory),
                             fix=f"delete it with `kdkit cache clear {directory.name}`")  # fmt: skip
        tensors = _read_shards(directory, meta)
        return CachedTeacher(tensors, needs, device, directory)
    tensors = compute_outputs(teacher, needs, encoded_rows, num_rows, device, batch_size,
                              desc=f"teacher cache ({split_name})", progress=progress,
                              dist=dist)  # fmt: skip
    meta = {**expect, "rows": num_rows, "key": key, "teacher": teacher.info.name}
    if several:
        from kdkit.engine.distributed import write_entry_sharded

        meta["created"] = dist.on_main(time.time)  # one value for the whole job
        write_entry_sharded(directory, tensors, meta, dist, _write_shard, _finish_entry)
    else:
        _write_entry(directory, tensors, {**meta, "created": time.time()})
    return CachedTeacher(tensors, needs, device, directory)


def compute_outputs(teacher: Any, needs: Needs, encoded_rows: Any, num_rows: int,
                    device: torch.device, batch_size: int, desc: str = "teacher",
                    progress: bool = True, dist: Any = None) -> dict[str, torch.Tensor]:  # fmt: skip
    """Run the teacher over every row (in order) and stack what ``needs`` asks for.

    With ``dist`` over several ranks each rank runs its whole batches of the same batch plan
    and every rank receives all rows (bit-identical to one process: same batches, same padding).
    """
    from tqdm.auto import tqdm

    parts: dict[str, list[torch.Tensor]] = {}
    # sort rows by length so batches carry little padding; results go back to row order
    order = sorted(range(num_rows), key=lambda r: int(encoded_rows.input_ids[r].numel()))
    if dist is not None and dist.enabled:
        from kdkit.engine.distributed import compute_outputs_sharded

        return compute_outputs_sharded(teacher, needs, encoded_rows, order, device, batch_size,
                                       dist)  # fmt: skip
    with torch.no_grad(), tqdm(total=num_rows, desc=desc, disable=not progress, leave=False) as bar:
        for start in range(0, num_rows, batch_size):
            rows = order[start : start + batch_size]
            enc: Encoded = encoded_rows.collate(rows).to(device)
            out = teacher(enc, needs)
            parts.setdefault("logits", []).append(out.logits.float().cpu())
            for layer in needs.pooled_layers:
                parts.setdefault(f"pooled.{layer}", []).append(out.pooled[layer].float().cpu())
            if needs.embedding and out.embedding is not None:
                parts.setdefault("embedding", []).append(out.embedding.float().cpu())
            bar.update(len(rows))
    inverse = torch.empty(num_rows, dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(num_rows)
    return {k: torch.cat(v)[inverse].contiguous() for k, v in parts.items()}


def _write_shard(tmp: Path, tensors: dict[str, torch.Tensor], i: int) -> str:
    """Write shard ``i`` (rows ``i*SHARD_ROWS ..``) into ``tmp``; returns its file name."""
    name = f"shard-{i:05d}.safetensors"
    start = i * SHARD_ROWS
    save_file({k: v[start : start + SHARD_ROWS].contiguous() for k, v in tensors.items()},
              str(tmp / name))  # fmt: skip
    return name


def _write_entry(directory: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    tmp = directory.with_name(f".{directory.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    n = meta["rows"]
    shards = [_write_shard(tmp, tensors, i) for i in range(-(-n // SHARD_ROWS))]
    _finish_entry(directory, tmp, tensors, meta, shards)


def _finish_entry(directory: Path, tmp: Path, tensors: dict[str, torch.Tensor],
                  meta: dict[str, Any], shards: list[str]) -> None:  # fmt: skip
    """Write ``meta.json`` (the index) into ``tmp`` and move ``tmp`` to ``directory``."""
    meta = {**meta, "shards": shards, "tensors": {k: list(v.shape) for k, v in tensors.items()}}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    directory.parent.mkdir(parents=True, exist_ok=True)
    if directory.exists():  # a concurrent run built it first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
        return
    os.replace(tmp, directory)


def _read_shards(directory: Path, meta: dict[str, Any]) -> dict[str, torch.Tensor]:
    parts: dict[str, list[torch.Tensor]] = {}
    try:
        for name in meta["shards"]:
            for k, v in load_file(str(directory / name)).items():
                parts.setdefault(k, []).append(v)
    except (OSError, KeyError, Exception) as exc:  # safetensors raises its own error types
        raise KdkitError(f"the teacher cache is damaged: {type(exc).__name__}: {exc}",
                         where=str(directory),
                         fix=f"delete it with `kdkit cache clear {directory.name}`; it is rebuilt "
                         "on the next run") from None  # fmt: skip
    return {k: torch.cat(v) for k, v in parts.items()}


def list_entries(cache_root: Path) -> list[dict[str, Any]]:
    """Every teacher-output cache entry under ``cache_root`` with its meta and size."""
    out = []
    base = cache_root / "teacher-outputs"
    if not base.is_dir():
        return out
    for d in sorted(base.iterdir()):
        if d.name.startswith(".") or not (d / "meta.json").is_file():
            continue
        try:
            meta = json.loads((d / "meta.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            meta = {"damaged": True}
        size = sum(f.stat().st_size for f in d.iterdir() if f.is_file())
        out.append({"key": d.name, "path": str(d), "bytes": size, **meta})
    return out
