"""The teacher signal: the teacher run live, or its outputs computed once and read from a cache.

A KD method needs the same teacher outputs for the same rows every epoch. Computing them once
makes a KD epoch cost about what an FT epoch costs. The cache lives in
``CACHE/teacher-outputs/<key>/`` as safetensors shards plus ``meta.json``; the key hashes

* the teacher's fingerprint (weights + tokenizer + config),
* the data fingerprint (the task's),
* the split, what is cached (:class:`Needs`) and ``max_length``,
* for a top-k entry (``cache.logits: topk``), its ``k`` and temperature
  (:mod:`kdkit.engine.topk_cache`; full-logit entries keep the keys they always had).

What is cached: logits, pooled layer features and the head's feature — ``[N, C]`` / ``[N, H]``
per split, small at any size — and, for a method that asks for token states (``hidden_layers``,
CKD-like methods), those layers' states of every real token in the format ``cache.token_states``
(bf16 by default; :mod:`kdkit.engine.token_cache`, whose format is part of the key). With
``cache.token_states: off`` such a method gets a teacher that runs live (``teacher_signal:
live``). docs/caching.md describes the formats and sizes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from kdkit.api import Batch, Encoded, ModelOutput, Needs, Teacher
from kdkit.engine.batching import EncodedRows
from kdkit.engine.distributed import Dist, rank_batches
from kdkit.engine.persist import publish_entry
from kdkit.engine.token_cache import (
    DEFAULT_FORMAT,
    TokenStates,
    build_entry,
    read_entry,
)
from kdkit.engine.topk_cache import LogitsFormat, TopKCachedTeacher, is_topk_entry, size_meta
from kdkit.errors import KdkitError
from kdkit.integrity import verify
from kdkit.progress import progress_bar

#: Bump when the cache layout changes (older entries are then simply not found).
CACHE_VERSION = 1
#: Rows per safetensors shard.
SHARD_ROWS = 4096


def cacheable(needs: Needs, token_states: str = DEFAULT_FORMAT) -> bool:
    """Whether every output in ``needs`` is cached: token states are, unless ``token_states``
    (``cache.token_states``) is ``"off"``."""
    return not needs.hidden_layers or token_states != "off"


def cache_key(
    teacher_fp: str,
    data_fp: str,
    split: str,
    needs: Needs,
    max_length: int,
    token_states: str | None = None,
    logits_format: dict[str, Any] | None = None,
) -> str:
    """The directory name of one cache entry (``token_states``: the storage format of an entry
    with token states; ``logits_format``: a top-k entry's :meth:`LogitsFormat.key_json`; ``None``
    for an entry without token states / with full logits, whose key is what it always was)."""
    what: dict[str, Any] = {
        "teacher": teacher_fp,
        "data": data_fp,
        "split": split,
        "needs": _needs_json(needs),
        "max_length": max_length,
        "version": CACHE_VERSION,
    }
    if token_states is not None:
        what["token_states"] = token_states
    if logits_format is not None:
        what["logits"] = logits_format
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:24]


def _needs_json(needs: Needs) -> dict[str, Any]:
    d = asdict(needs)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


class LiveTeacher:
    """Runs the teacher on each batch (``eval()``, ``no_grad``)."""

    kind = "live"

    def __init__(self, teacher: Teacher, needs: Needs, device: torch.device) -> None:
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

    def __init__(
        self,
        tensors: dict[str, torch.Tensor],
        needs: Needs,
        device: torch.device,
        directory: Path,
        tokens: TokenStates | None = None,
    ) -> None:
        self.tensors = {k: v.to(device) for k, v in tensors.items()}
        self.needs = needs
        self.directory = directory
        self.tokens = tokens  # token states (kept in host memory), when the method needs them

    @property
    def logits(self) -> torch.Tensor:
        """``[N, C]`` teacher logits of the whole split."""
        return self.tensors["logits"]

    def __call__(self, batch: Batch) -> ModelOutput:
        """The cached outputs of ``batch.index`` rows."""
        idx = batch.index.to(self.logits.device)
        pooled = {
            int(k.split(".")[1]): v[idx] for k, v in self.tensors.items() if k.startswith("pooled.")
        }
        emb = self.tensors.get("embedding")
        out = ModelOutput(
            logits=self.logits[idx], pooled=pooled, embedding=None if emb is None else emb[idx]
        )
        return out if self.tokens is None else self.tokens.attach(out, batch, idx.device)


def open_signal(
    tensors: dict[str, torch.Tensor],
    needs: Needs,
    device: torch.device,
    directory: Path,
    meta: dict[str, Any],
    tokens: TokenStates | None = None,
) -> CachedTeacher | TopKCachedTeacher:
    """The teacher signal of an entry's tensors: full logits or the top-k form (with the
    entry's token states, if it holds them)."""
    if is_topk_entry(tensors):
        return TopKCachedTeacher(tensors, needs, device, directory, meta, tokens)
    return CachedTeacher(tensors, needs, device, directory, tokens)


def _check_meta(meta: dict[str, Any], expect: dict[str, Any], directory: Path) -> None:
    for name in expect:
        if meta.get(name) != expect[name]:
            raise KdkitError(
                f"the teacher cache does not match this run: {name} is {meta.get(name)!r} in "
                f"the cache but {expect[name]!r} for this run",
                where=str(directory),
                fix="point cache.teacher_outputs at the cache of this teacher and data, remove "
                "the setting to use the automatic key, or delete that cache with "
                f"`kdkit cache clear {directory.name}`",
            )


@dataclass
class TeacherPass:
    """One pass of the teacher over every row of a split: what runs, on what, where.

    Attributes:
        teacher: the frozen teacher.
        needs: what to keep of its outputs.
        rows: the split's teacher tokenisation (``collate(rows) -> Encoded``, ``len``).
        device: where the teacher runs.
        batch_size: rows per forward pass (rows are sorted by length first).
        progress: show a progress bar.
        dist: the process group; over several ranks each rank runs its whole batches of the one
            batch plan and every rank receives every row (see :func:`compute_outputs`).
    """

    teacher: Teacher
    needs: Needs
    rows: EncodedRows
    device: torch.device
    batch_size: int
    progress: bool = True
    dist: Dist = field(default_factory=Dist)


@dataclass(frozen=True)
class CacheSlot:
    """Where a split's teacher outputs are cached and what the entry must match.

    Attributes:
        split: the split's name (``train``, ``test``).
        data_fp: the task's data fingerprint.
        max_length: tokens per example of the teacher tokenisation.
        cache_root: the cache directory (entries under ``teacher-outputs/<key>``).
        explicit_dir: a directory given by the user (``cache.teacher_outputs``): the entry is
            ``explicit_dir/<split>`` and must match.
        token_states: the storage format of token states (``cache.token_states``), used when
            the needs include ``hidden_layers``.
        logits: how the entry stores the logits (full, or top-k: ``kdkit.engine.topk_cache``).
    """

    split: str
    data_fp: str
    max_length: int
    cache_root: Path
    explicit_dir: str | None = None
    token_states: str = DEFAULT_FORMAT
    logits: LogitsFormat = LogitsFormat()


def load_or_build(job: TeacherPass, slot: CacheSlot) -> CachedTeacher | TopKCachedTeacher:
    """Load the cached teacher outputs of a split, computing and storing them when missing.

    Over several ranks (``job.dist``) rank 0 decides whether the entry exists; a build is shared
    out (each rank runs the teacher on its batches, each writes its shard files, rank 0 writes
    ``meta.json``) and gives the same entry, tensor for tensor, as one process.
    """
    teacher, needs, dist = job.teacher, job.needs, job.dist
    num_rows = len(job.rows)
    teacher_fp = teacher.fingerprint()
    expect = {
        "teacher_fingerprint": teacher_fp,
        "data_fingerprint": slot.data_fp,
        "split": slot.split,
        "max_length": slot.max_length,
        "needs": _needs_json(needs),
        "logits_format": slot.logits.key_json(),  # None (absent in older entries): full logits
    }
    token_fmt = slot.token_states if needs.hidden_layers else None  # the token-state format
    if token_fmt == "off":
        raise ValueError("token states are not cached with cache.token_states: off")
    key = cache_key(
        teacher_fp,
        slot.data_fp,
        slot.split,
        needs,
        slot.max_length,
        token_fmt,
        slot.logits.key_json(),
    )
    directory = (
        Path(slot.explicit_dir) / slot.split
        if slot.explicit_dir
        else slot.cache_root / "teacher-outputs" / key
    )
    meta_path = directory / "meta.json"
    exists = dist.on_main(meta_path.is_file)
    if exists and not meta_path.is_file():  # only possible over several ranks
        raise KdkitError(
            "rank 0 sees a teacher cache this rank does not",
            where=str(directory),
            fix="put cache.dir (or KDKIT_CACHE) on storage every node shares, as "
            "docs/distributed.md says",
        )
    if exists:
        verify(
            directory,
            artefact=f"teacher-output cache entry {directory.name}",
            fix=f"delete it with `kdkit cache clear {directory.name}`; it is rebuilt on the next run",
        )
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if not isinstance(meta, dict):
                raise ValueError("not an object")
        except (ValueError, UnicodeDecodeError):
            raise KdkitError(
                "the teacher cache's meta.json is damaged",
                where=str(meta_path),
                fix=f"delete it with `kdkit cache clear {directory.name}`; it is "
                "rebuilt on the next run",
            ) from None
        _check_meta(meta, expect, directory)
        if meta.get("rows") != num_rows:
            raise KdkitError(
                f"the teacher cache has {meta.get('rows')} rows, the split {num_rows}",
                where=str(directory),
                fix=f"delete it with `kdkit cache clear {directory.name}`",
            )
        if token_fmt is not None:
            tensors, tokens = read_entry(directory, meta, num_rows, token_fmt)
            return open_signal(tensors, needs, job.device, directory, meta, tokens)
        tensors = _read_shards(directory, meta)
        return open_signal(tensors, needs, job.device, directory, meta)
    if token_fmt is not None:  # built and written by token_cache; then read like any entry
        meta = {**expect, "rows": num_rows, "key": key, "teacher": teacher.info.name}
        meta["created"] = dist.on_main(time.time)
        build_entry(job, directory, meta, token_fmt, slot.logits)  # full or top-k logits
        return load_or_build(job, slot)
    tensors = compute_outputs(job, desc=f"teacher cache ({slot.split})")
    num_classes = int(tensors["logits"].shape[1])
    tensors = slot.logits.encode(tensors)  # full logits, or the top-k form
    meta = {
        **expect,
        "rows": num_rows,
        "key": key,
        "teacher": teacher.info.name,
        "created": dist.on_main(time.time),  # one value for the whole job
        "num_classes": num_classes,
        **size_meta(tensors, num_classes),
    }
    if slot.logits.is_topk:  # the k actually stored: the requested one, capped at C
        meta["k_stored"] = int(tensors["topk_indices"].shape[1])
    _write_entry(directory, tensors, meta, dist)
    return open_signal(tensors, needs, job.device, directory, meta)


@torch.no_grad()
def compute_outputs(job: TeacherPass, desc: str = "teacher") -> dict[str, torch.Tensor]:
    """Run the teacher over every row and stack what ``job.needs`` asks for, in row order.

    Rows are sorted by length (little padding); the batches are that order's consecutive
    ``batch_size`` chunks, dealt to the ranks by :func:`rank_batches` (on one process: all of
    them) and gathered back into row order on every rank — the same batches and padding on any
    number of ranks, so the outputs are bit-identical. Returns ``{"logits": [N, C],
    "pooled.L": [N, H], "embedding": [N, H]}`` (what was asked).
    """
    dist, needs, encoded_rows = job.dist, job.needs, job.rows
    num_rows = len(encoded_rows)
    order = sorted(range(num_rows), key=lambda r: int(encoded_rows.input_ids[r].numel()))
    plan = [order[s : s + job.batch_size] for s in range(0, num_rows, job.batch_size)]
    mine = rank_batches(plan, dist.rank, dist.world_size)
    parts: dict[str, list[torch.Tensor]] = {}
    done = sum(len(rows) for rows in mine)
    with progress_bar(total=done, desc=desc, disable=not job.progress, leave=False) as bar:
        # a rank without a batch runs one (plan[0], dropped) only to learn the output shapes
        for rows in mine or plan[:1]:
            enc: Encoded = encoded_rows.collate(rows).to(job.device)
            out = job.teacher(enc, needs)
            got = {"logits": out.logits}
            got.update({f"pooled.{layer}": out.pooled[layer] for layer in needs.pooled_layers})
            if needs.embedding and out.embedding is not None:
                got["embedding"] = out.embedding
            for k, v in got.items():
                parts.setdefault(k, []).append(v.float().cpu())
            bar.update(len(rows) if mine else 0)
    mine_rows = [r for rows in mine for r in rows]
    result = {}
    for k in sorted(parts):  # the same key order on every rank: the collectives must pair up
        local = torch.cat(parts[k]) if mine else parts[k][0][:0]
        result[k] = dist.gather_rows(local, mine_rows, num_rows).contiguous()
    return result


def _write_shard(tmp: Path, tensors: dict[str, torch.Tensor], i: int) -> str:
    """Write shard ``i`` (rows ``i*SHARD_ROWS ..``) into ``tmp``; returns its file name."""
    name = f"shard-{i:05d}.safetensors"
    start = i * SHARD_ROWS
    save_file(
        {k: v[start : start + SHARD_ROWS].contiguous() for k, v in tensors.items()}, str(tmp / name)
    )
    return name


def _write_entry(
    directory: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any], dist: Dist
) -> None:
    """Write a cache entry from every rank: the same files as one process would write.

    Every rank holds all tensors (after :func:`compute_outputs`). Rank ``r`` writes shard files
    ``r, r + world, ...`` (on one process: all) into a temporary directory beside the entry,
    each through a temporary name and a rename; after a barrier rank 0 writes any shard it does
    not see (a node without shared storage), then ``meta.json``, and renames the directory into
    place. Readers see no entry or a complete one.
    """
    tmp = directory.with_name(f".{directory.name}.tmp{dist.on_main(os.getpid)}")
    if dist.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    n_shards = -(-meta["rows"] // SHARD_ROWS)
    names = [f"shard-{i:05d}.safetensors" for i in range(n_shards)]
    for i in range(dist.rank, n_shards, dist.world_size):
        part = tmp / f".rank{dist.rank}"
        part.mkdir(parents=True, exist_ok=True)
        os.replace(part / _write_shard(part, tensors, i), tmp / names[i])
        part.rmdir()
    dist.barrier()
    if dist.is_main:
        for i, name in enumerate(names):
            if not (tmp / name).is_file():
                _write_shard(tmp, tensors, i)
        _finish_entry(directory, tmp, tensors, meta, names)
    dist.barrier()
    if not dist.is_main and tmp.exists():  # this node's storage is not rank 0's: drop our copy
        shutil.rmtree(tmp, ignore_errors=True)


def _finish_entry(
    directory: Path,
    tmp: Path,
    tensors: dict[str, torch.Tensor],
    meta: dict[str, Any],
    shards: list[str],
) -> None:
    """Write ``meta.json`` (the index) into ``tmp`` and move ``tmp`` to ``directory``."""
    meta = {**meta, "shards": shards, "tensors": {k: list(v.shape) for k, v in tensors.items()}}
    publish_entry(tmp, directory, meta, "teacher-output cache entry")


def _read_shards(directory: Path, meta: dict[str, Any]) -> dict[str, torch.Tensor]:
    parts: dict[str, list[torch.Tensor]] = {}
    try:
        for name in meta["shards"]:
            if not isinstance(name, str) or "/" in name or name.startswith("."):
                raise ValueError(f"meta.json lists an odd shard name {name!r}")
            for k, v in load_file(str(directory / name)).items():
                parts.setdefault(k, []).append(v)
    except (OSError, KeyError, Exception) as exc:  # safetensors raises its own error types
        raise KdkitError(
            f"the teacher cache is damaged: {type(exc).__name__}: {exc}",
            where=str(directory),
            fix=f"delete it with `kdkit cache clear {directory.name}`; it is rebuilt "
            "on the next run",
        ) from None
    return {k: torch.cat(v) for k, v in parts.items()}


def list_entries(cache_root: Path) -> list[dict[str, Any]]:
    """Every teacher-output cache entry under ``cache_root`` with its meta and size."""
    out: list[dict[str, Any]] = []
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
