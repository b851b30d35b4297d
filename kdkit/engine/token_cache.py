"""Token-level teacher states in the teacher cache: ragged, compact, checked like the rest.

A method that asks for the teacher's token states (``Needs.hidden_layers``: CKD, FitNets with
``features: tokens``, any plugin method) gets them from a cache entry built in one teacher
pass, like logits. The entry lives beside the logit entries (``CACHE/teacher-outputs/<key>/``,
the key adding the storage format to the teacher, data, split, needs and ``max_length``) and
holds, in safetensors shards of whole batches of the build's length-sorted plan:

=====================  ==========  ==========================================================
tensor                 dtype       shape (``n`` rows of the shard, ``T`` their real tokens)
=====================  ==========  ==========================================================
``rows``               int64       ``[n]`` split row numbers
``lengths``            int32       ``[n]`` real tokens per row (the teacher's attention mask)
``offsets``            int32       ``[T, 2]`` character spans of those tokens
``hidden.L``           format      ``[T, H]`` layer ``L``'s states, row after row, no padding
``hidden.L.scale``     float32     ``[T]`` per-token scale (``int8`` only)
``logits``             float32     ``[n, C]``; ``pooled.L`` / ``embedding`` ``[n, H]`` if asked
=====================  ==========  ==========================================================

With ``cache.logits: topk`` the shards hold ``topk_logprobs`` / ``topk_indices`` / ``tail``
(:mod:`kdkit.engine.topk_cache`) instead of ``logits``, and ``meta.json`` the top-k entry's
``num_classes``, ``k_stored`` and bytes per example.

Only real tokens are stored (ragged, with per-row offsets into the token arrays): padding to
``max_length`` would store ``max_length / mean length`` times more (``meta.json`` records both
sizes). A batch read from the entry is padded to its longest row exactly as the live teacher's
batch is (:meth:`kdkit.engine.batching.EncodedRows.collate`), so methods see the same states,
attention mask and offsets; padded positions hold zeros (the live teacher's padded states are
arbitrary and every method masks them).

Formats (``cache.token_states``): ``bf16`` (default; relative rounding error ≤ 2⁻⁸), ``fp16``
(≤ 2⁻¹¹, range ±65504), ``int8`` (per-token absmax scale: error ≤ ``max|h| / 254`` per element,
:func:`int8_error_bound`), ``fp32`` (exact), ``off`` (the teacher runs live).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from kdkit.api import Batch, Needs
from kdkit.engine.distributed import rank_batches
from kdkit.engine.persist import publish_entry
from kdkit.engine.topk_cache import LogitsFormat, size_meta
from kdkit.errors import KdkitError
from kdkit.progress import progress_bar

#: Storage formats of token states and the dtype each is written in.
FORMATS: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "int8": torch.int8,
}
#: The format used when the config does not say (``cache.token_states``).
DEFAULT_FORMAT = "bf16"
#: Rows per shard (about; a shard holds whole batches of the build plan).
TOKEN_SHARD_ROWS = 1024
#: Bytes of one stored character span (two int32).
OFFSET_BYTES = 8


def quantise_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[T, H]`` float -> ``(q [T, H] int8, scale [T] float32)`` with ``x ≈ q * scale``.

    Symmetric per-token absmax scaling: ``scale = max_j |x_j| / 127``, ``q = round(x / scale)``.
    A token whose states are all zero gets scale 0 (and decodes to zeros).
    """
    x = x.float()
    scale = x.abs().amax(dim=-1) / 127.0  # [T]
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(x / safe.unsqueeze(-1)).clamp_(-127, 127).to(torch.int8)
    return q, scale


def dequantise_int8(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``q [..., H] int8``, ``scale [...]`` -> float32 ``q * scale``."""
    return q.float() * scale.unsqueeze(-1)


def int8_error_bound(x: torch.Tensor) -> torch.Tensor:
    """``[T]`` the largest error :func:`quantise_int8` may make on a token of ``x [T, H]``:
    half a quantisation step, ``max_j |x_j| / 254`` (rounding to the nearest step)."""
    return x.float().abs().amax(dim=-1) / 254.0


def element_bytes(fmt: str) -> int:
    """Bytes of one stored state element in ``fmt``."""
    return torch.empty((), dtype=FORMATS[fmt]).element_size()


def bytes_per_token(fmt: str, hidden_sizes: Sequence[int]) -> int:
    """Stored bytes per real token: every cached layer's state (plus its int8 scale) and the
    token's character span."""
    per_layer = [h * element_bytes(fmt) + (4 if fmt == "int8" else 0) for h in hidden_sizes]
    return sum(per_layer) + OFFSET_BYTES


def check_format(fmt: str) -> str:
    """``fmt`` if it is a storage format, else a :class:`KdkitError` listing them."""
    if fmt not in FORMATS:
        raise KdkitError(
            f"unknown token-state format {fmt!r}",
            where="cache.token_states",
            fix=f"use one of {', '.join(FORMATS)} or off",
        )
    return fmt


class TokenStates:
    """The cached token states of a split, ragged, looked up per batch.

    Args:
        stored: layer -> ``[T, H]`` states in the storage dtype, all rows' real tokens.
        scales: layer -> ``[T]`` float32 per-token scales (``int8`` only).
        offsets: ``[T, 2]`` int32 character spans.
        starts: ``[N]`` int64 index of row ``r``'s first token in the token arrays.
        lengths: ``[N]`` int64 real tokens of row ``r``.
    """

    def __init__(
        self,
        stored: dict[int, torch.Tensor],
        scales: dict[int, torch.Tensor],
        offsets: torch.Tensor,
        starts: torch.Tensor,
        lengths: torch.Tensor,
    ) -> None:
        self.stored, self.scales = stored, scales
        self.offsets, self.starts, self.lengths = offsets, starts, lengths

    def lookup(
        self, index: torch.Tensor, device: torch.device
    ) -> tuple[Mapping[int, torch.Tensor], torch.Tensor, torch.Tensor]:
        """``index [B]`` rows -> ``({layer: [B, L, H] float32}, mask [B, L], offsets [B, L, 2])``
        with ``L`` the longest of the rows, right-padded (zeros) like a live batch.

        The states are decoded layer by layer when first read (:class:`BatchStates`): a method
        that needs none of them for this batch (CKD with its teacher relations kept) reads none.
        """
        index = index.cpu()
        lengths = self.lengths[index]  # [B]
        width = int(lengths.max()) if len(index) else 0
        pos = torch.arange(width)
        valid = pos.unsqueeze(0) < lengths.unsqueeze(1)  # [B, L]
        flat = torch.where(valid, self.starts[index].unsqueeze(1) + pos, 0)  # [B, L]
        offsets = (self.offsets[flat].long() * valid.unsqueeze(-1)).to(device)  # [B, L, 2]
        return BatchStates(self, flat, valid, device), valid.long().to(device), offsets

    def decode(
        self, layer: int, flat: torch.Tensor, valid: torch.Tensor, device: torch.device
    ) -> torch.Tensor:
        """Layer ``layer``'s states at token positions ``flat [B, L]`` (zeros where not
        ``valid``), as float32 ``[B, L, H]`` on ``device``."""
        got = self.stored[layer][flat]  # [B, L, H]
        if layer in self.scales:
            got = dequantise_int8(got, self.scales[layer][flat])
        return (got.float() * valid.unsqueeze(-1)).to(device)

    def attach(self, out: Any, batch: Batch, device: torch.device) -> Any:
        """``out`` (a :class:`kdkit.api.ModelOutput` of the batch's cached row tensors, full or
        top-k logits) with the batch's token states, attention mask and offsets filled in."""
        out.hidden_states, out.attention_mask, out.offsets = self.lookup(batch.index, device)
        return out


class BatchStates(Mapping[int, torch.Tensor]):
    """A batch's cached token states, ``layer -> [B, L, H]``, each decoded on first read (then
    kept): reads like the dict a live teacher returns."""

    def __init__(
        self, tokens: TokenStates, flat: torch.Tensor, valid: torch.Tensor, device: torch.device
    ) -> None:
        self._tokens, self._flat, self._valid, self._device = tokens, flat, valid, device
        self._decoded: dict[int, torch.Tensor] = {}

    def __getitem__(self, layer: int) -> torch.Tensor:
        if layer not in self._tokens.stored:
            raise KeyError(layer)
        if layer not in self._decoded:
            self._decoded[layer] = self._tokens.decode(layer, self._flat, self._valid, self._device)
        return self._decoded[layer]

    def __iter__(self) -> Iterator[int]:
        return iter(self._tokens.stored)

    def __len__(self) -> int:
        return len(self._tokens.stored)


def _encode_layer(states: torch.Tensor, fmt: str, name: str) -> dict[str, torch.Tensor]:
    """``[T, H]`` float states -> the shard tensors of one layer in ``fmt``."""
    if fmt == "int8":
        q, scale = quantise_int8(states)
        return {name: q, f"{name}.scale": scale}
    return {name: states.to(FORMATS[fmt])}


#: A shard's layout tensors (row numbers, row lengths, token offsets): neither teacher outputs
#: per row nor token states (``hidden.*``).
_BOOKKEEPING = ("rows", "lengths", "offsets")


def row_tensors_of(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The per-row payload of a shard: logits (full or top-k), pooled features, embedding."""
    return {
        k: v for k, v in tensors.items() if k not in _BOOKKEEPING and not k.startswith("hidden.")
    }


@torch.no_grad()
def _run_group(
    job: Any, group: Sequence[Sequence[int]], fmt: str, bar: Any, logits: LogitsFormat
) -> tuple[dict[str, torch.Tensor], int]:
    """Run the teacher on one shard's batches: the shard's tensors (see the module docstring;
    the logits stored as ``logits`` asks: full or top-k) and the number of classes."""
    needs: Needs = job.needs
    parts: dict[str, list[torch.Tensor]] = {}
    for rows in group:
        enc = job.rows.collate(rows).to(job.device)
        out = job.teacher(enc, needs)
        mask = (out.attention_mask if out.attention_mask is not None else enc.attention_mask).bool()
        spans = out.offsets if out.offsets is not None else enc.offsets
        got = {
            "rows": torch.as_tensor(list(rows), dtype=torch.long),
            "lengths": mask.sum(1).to(torch.int32),
            "offsets": spans[mask].to(torch.int32),  # [T_b, 2] real tokens, row after row
            "logits": out.logits.float(),
        }
        got.update({f"pooled.{layer}": out.pooled[layer].float() for layer in needs.pooled_layers})
        if needs.embedding and out.embedding is not None:
            got["embedding"] = out.embedding.float()
        for layer in needs.hidden_layers:
            states = out.hidden_states[layer][mask].float()  # [T_b, H] real tokens only
            got.update(_encode_layer(states, fmt, f"hidden.{layer}"))
        for k, v in got.items():
            parts.setdefault(k, []).append(v.cpu())
        bar.update(len(rows))
    tensors = {k: torch.cat(v).contiguous() for k, v in parts.items()}
    num_classes = int(tensors["logits"].shape[1])
    return logits.encode(tensors), num_classes  # top-k is per row: per shard = per split


def shard_plan(num_rows: int, lengths: Sequence[int], batch_size: int) -> list[list[list[int]]]:
    """The build's shards: the length-sorted batch plan of ``compute_outputs``, cut into groups
    of whole batches of about :data:`TOKEN_SHARD_ROWS` rows (the same on any number of ranks)."""
    order = sorted(range(num_rows), key=lambda r: lengths[r])
    plan = [order[s : s + batch_size] for s in range(0, num_rows, batch_size)]
    per_shard = max(1, TOKEN_SHARD_ROWS // batch_size)
    return [plan[g : g + per_shard] for g in range(0, len(plan), per_shard)]


def build_entry(
    job: Any,
    directory: Path,
    meta: dict[str, Any],
    fmt: str,
    logits: LogitsFormat | None = None,
) -> None:
    """Run the teacher over every row and write the token-state entry ``directory``.

    ``logits`` says how the entry stores the logits (default full; ``topk``: the same tensors as
    a top-k logit entry, :mod:`kdkit.engine.topk_cache`, beside the token states).

    ``job`` is a :class:`kdkit.engine.teacher_cache.TeacherPass`. Over several ranks each rank
    runs and writes its shards (shard ``k`` on rank ``k % world``) into a temporary directory
    beside the entry; rank 0 then writes ``meta.json`` and the integrity manifest and renames
    the directory into place — the same files as one process writes. The ranks must share the
    cache directory (docs/distributed.md).
    """
    dist = job.dist
    logits = logits or LogitsFormat()
    lengths = [int(ids.numel()) for ids in job.rows.input_ids]
    shards = shard_plan(len(lengths), lengths, job.batch_size)
    names = [f"tokens-{i:05d}.safetensors" for i in range(len(shards))]
    tmp = directory.with_name(f".{directory.name}.tmp{dist.on_main(os.getpid)}")
    if dist.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    mine = rank_batches(list(range(len(shards))), dist.rank, dist.world_size)
    total = sum(len(rows) for k in mine for rows in shards[k])
    shapes: dict[str, list[int]] = {}
    sizes: dict[str, Any] = {}  # classes; for top-k also k stored and bytes per row (shard 0)
    tokens = 0
    desc = f"teacher cache, token states ({meta['split']})"
    with progress_bar(total=total, desc=desc, disable=not job.progress, leave=False) as bar:
        for k in mine:
            tensors, num_classes = _run_group(job, shards[k], fmt, bar, logits)
            part = tmp / f".rank{dist.rank}"
            part.mkdir(parents=True, exist_ok=True)
            save_file(tensors, str(part / names[k]))
            os.replace(part / names[k], tmp / names[k])
            part.rmdir()
            tokens += int(tensors["lengths"].long().sum())
            if not shapes:
                shapes = {n: list(v.shape[1:]) for n, v in tensors.items()}
                sizes = {"num_classes": num_classes}
                if logits.is_topk:  # the k actually stored (capped at C) and the bytes per row
                    sizes["k_stored"] = int(tensors["topk_indices"].shape[1])
                    sizes.update(size_meta(row_tensors_of(tensors), num_classes))
    dist.barrier()
    tokens = sum(dist.all_gather_object(tokens))
    shapes = dist.on_main(lambda: shapes)  # rank 0 ran shard 0, so it knows the widths
    sizes = dist.on_main(lambda: sizes)
    final = {**meta, **sizes, "shapes": shapes, "tokens": tokens}
    dist.on_main(lambda: _finish(directory, tmp, names, final, fmt))
    dist.barrier()


def _finish(directory: Path, tmp: Path, names: list[str], meta: dict[str, Any], fmt: str) -> None:
    """Rank 0: check every shard arrived, write ``meta.json`` and the manifest, rename."""
    missing = [n for n in names if not (tmp / n).is_file()]
    if missing:
        shutil.rmtree(tmp, ignore_errors=True)
        raise KdkitError(
            f"token-state shards written by other ranks are missing here: {', '.join(missing)}",
            where=str(tmp),
            fix="put cache.dir (or KDKIT_CACHE) on storage every node shares, as "
            "docs/distributed.md says",
        )
    shapes, tokens = meta.pop("shapes"), meta.pop("tokens")
    layers = list(meta["needs"]["hidden_layers"])
    hidden = [shapes[f"hidden.{layer}"][0] for layer in layers]
    per_token = bytes_per_token(fmt, hidden)
    rows = int(meta["rows"])
    meta["token_states"] = {
        "format": fmt,
        "layers": layers,
        "hidden_sizes": hidden,
        "tokens": tokens,
        "mean_tokens_per_example": tokens / max(rows, 1),
        "bytes_per_token": per_token,
        "bytes_per_example": per_token * tokens / max(rows, 1),
        "padded_bytes_per_example": per_token * int(meta["max_length"]),
        "layout": "ragged (real tokens only, per-row offsets)",
    }
    meta["shards"] = names
    publish_entry(tmp, directory, meta, "teacher-output cache entry")


def read_entry(
    directory: Path, meta: dict[str, Any], num_rows: int, fmt: str
) -> tuple[dict[str, torch.Tensor], TokenStates]:
    """Read a verified token-state entry: the row tensors in row order (``logits``,
    ``pooled.L``, ``embedding``) and the :class:`TokenStates`.

    Raises:
        KdkitError: the entry was stored in another format (a ``cache.teacher_outputs``
            directory of another run), or a shard cannot be read or does not add up.
    """
    fix = f"delete it with `kdkit cache clear {directory.name}`; it is rebuilt on the next run"
    stored_fmt = (meta.get("token_states") or {}).get("format")
    if stored_fmt != fmt:
        raise KdkitError(
            f"the teacher cache holds token states as {stored_fmt!r}, this run asks for {fmt!r}",
            where=str(directory),
            fix="set cache.token_states to the cache's format, or " + fix,
        )
    parts: dict[str, list[torch.Tensor]] = {}
    name = ""
    try:
        for name in meta["shards"]:
            if not isinstance(name, str) or "/" in name or name.startswith("."):
                raise ValueError(f"meta.json lists an odd shard name {name!r}")
            for k, v in load_file(str(directory / name)).items():
                parts.setdefault(k, []).append(v)
        cat = {k: torch.cat(v) for k, v in parts.items()}
        rows, lengths = cat.pop("rows"), cat.pop("lengths").long()
        if sorted(rows.tolist()) != list(range(num_rows)):
            raise ValueError(f"the shards do not hold rows 0..{num_rows - 1} once each")
        token_start = torch.cumsum(lengths, 0) - lengths  # [N] in stored order
        offsets = cat.pop("offsets")
        if offsets.shape[0] != int(lengths.sum()):
            raise ValueError("the token arrays do not match the row lengths")
        starts = torch.empty(num_rows, dtype=torch.long)
        starts[rows] = token_start
        by_row = torch.empty(num_rows, dtype=torch.long)
        by_row[rows] = lengths
        stored: dict[int, torch.Tensor] = {}  # layer -> [tokens, H] stored values
        scales: dict[int, torch.Tensor] = {}  # layer -> [tokens] int8 scales
        row_tensors: dict[str, torch.Tensor] = {}
        for k, v in cat.items():
            if k.startswith("hidden."):
                layer = int(k.split(".")[1])
                (scales if k.endswith(".scale") else stored)[layer] = v
            else:
                row_tensors[k] = torch.empty_like(v).index_copy_(0, rows, v)  # row order
    except Exception as exc:  # safetensors raises its own error types
        raise KdkitError(
            f"the teacher cache is damaged: {type(exc).__name__}: {exc}",
            where=str(directory / name) if name else str(directory),
            fix=fix,
        ) from None
    return row_tensors, TokenStates(stored, scales, offsets, starts, by_row)
