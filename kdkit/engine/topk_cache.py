"""Top-k teacher logits in the teacher-output cache (``cache.logits: topk``).

Instead of the teacher's full logits ``[N, C]`` an entry may hold, per row, the teacher's ``k``
most probable classes at a temperature ``T0`` (``cache.topk_temperature``) and the mass left over:

* ``topk_logprobs`` ``[N, k]`` float32 — ``log p_i^(T0)``, sorted by decreasing probability;
* ``topk_indices`` ``[N, k]`` int32 — their class ids;
* ``tail`` ``[N]`` float32 — ``log(sum of p_c^(T0) over the other C - k classes)`` (``-inf`` when
  ``k = C``).

``k`` is capped at C (``k >= C`` keeps the whole distribution: the entry then determines
``softmax(z / T)`` exactly at every ``T``, since ``T0 log p_i^(T0) = z_i - T0 log Z``). The entry's
``meta.json`` records ``logits_format: {format: topk, k, temperature}``, ``num_classes`` and the
bytes one example takes beside what full float32 logits would take.

A run reads such an entry through :class:`TopKCachedTeacher`: its outputs carry the top-k form
(``ModelOutput.topk``, a :class:`kdkit.kernels.TopKTeacher` at ``T0``; ``kdkit.kernels.sparse_kd_loss``
rescales it to the loss temperature, ``docs/caching.md``) and, for methods that read
``ModelOutput.logits``, a dense reconstruction (:func:`dense_logits`). This module knows nothing of
where entries live (``kdkit.engine.teacher_cache`` does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kdkit.api import Batch, ModelOutput, Needs
from kdkit.kernels import TopKTeacher, topk_teacher

#: The tensors of a top-k entry (besides pooled features and the embedding, as in a full one).
TOPK_TENSORS = ("topk_logprobs", "topk_indices", "tail")
#: Log-probabilities below this (and ``-inf``: no mass) become this in :func:`dense_logits`, so
#: the reconstruction stays finite; ``exp(-1e4)`` is 0 in every float type.
LOGPROB_FLOOR = -1.0e4


@dataclass(frozen=True)
class LogitsFormat:
    """How a cache entry stores the teacher's logits: ``full`` ``[N, C]`` or ``topk``.

    Attributes:
        kind: ``"full"`` or ``"topk"``.
        k: entries per row of a top-k entry (capped at C when the entry is written).
        temperature: ``T0``, the temperature the top-k log-probabilities are taken at.
    """

    kind: str = "full"
    k: int = 64
    temperature: float = 1.0

    @classmethod
    def of(cls, cache: Any) -> LogitsFormat:
        """The format a run's ``cache`` section (``kdkit.config.CacheConfig``) asks for."""
        return cls(cache.logits, int(cache.k), float(cache.topk_temperature))

    @property
    def is_topk(self) -> bool:
        """Whether the entry stores top-k log-probabilities."""
        return self.kind == "topk"

    def key_json(self) -> dict[str, Any] | None:
        """What the cache key and ``meta.json`` record of the format (``None`` for ``full``,
        so the keys of full entries are those of a kdkit without top-k)."""
        if not self.is_topk:
            return None
        return {"format": "topk", "k": self.k, "temperature": self.temperature}

    def encode(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The tensors to store: ``logits`` replaced by the top-k form when ``topk``."""
        if not self.is_topk:
            return tensors
        logits = tensors["logits"]  # [N, C]
        top = topk_teacher(logits, min(self.k, logits.shape[1]), self.temperature)
        out = {k: v for k, v in tensors.items() if k != "logits"}
        out.update(
            topk_logprobs=top.logprobs.float().contiguous(),
            topk_indices=top.indices.to(torch.int32).contiguous(),
            tail=top.tail_logmass.float().contiguous(),
        )
        return out


def is_topk_entry(tensors: dict[str, torch.Tensor]) -> bool:
    """Whether an entry's tensors are in the top-k form."""
    return "topk_indices" in tensors


def size_meta(tensors: dict[str, torch.Tensor], num_classes: int) -> dict[str, Any]:
    """``{bytes_per_example, full_logits_bytes_per_example}`` of an entry's tensors: the stored
    bytes of one row (every tensor) beside what the same row takes with full float32 logits."""
    per_row = sum(v.element_size() * v[0].numel() for v in tensors.values() if v.shape[0])
    logit_part = sum(
        v.element_size() * v[0].numel()
        for k, v in tensors.items()
        if (k in TOPK_TENSORS or k == "logits") and v.shape[0]
    )
    return {
        "bytes_per_example": int(per_row),
        "full_logits_bytes_per_example": int(per_row - logit_part + 4 * num_classes),
    }


def dense_logits(top: TopKTeacher) -> torch.Tensor:
    """``[N, C]`` logits whose ``softmax(. / T)`` reproduces the top-k teacher.

    ``T0 * log p`` per class at the stored ``T0``: the top-k entries get ``T0 log p_i``, each of
    the ``C - k`` other classes ``T0 log(q / (C - k))`` (the tail spread evenly). With ``k = C``
    this is the teacher's logits up to a per-row constant, so ``softmax(. / T)`` is exact at any
    ``T``; with ``k < C`` the tail's shape is an assumption (the maximum-entropy one).
    """
    if top.num_classes is None:
        raise ValueError("dense_logits needs TopKTeacher.num_classes")
    n, k = top.indices.shape
    c = int(top.num_classes)
    lp = top.logprobs.float()  # [N, k]
    if k < c:
        fill = top.tail_logmass.float() - math.log(c - k)  # [N] each tail class's share
    else:
        fill = torch.zeros(n, dtype=lp.dtype, device=lp.device)  # every class is a top-k entry
    dense = fill.unsqueeze(1).expand(n, c).clone()  # [N, C]
    dense.scatter_(1, top.indices.long(), lp)
    dense = torch.nan_to_num(dense, neginf=LOGPROB_FLOOR).clamp_min(LOGPROB_FLOOR)
    return top.temperature * dense


class TopKCachedTeacher:
    """The top-k teacher outputs of a whole split, held in memory, looked up by ``Batch.index``
    (the top-k counterpart of :class:`kdkit.engine.teacher_cache.CachedTeacher`)."""

    kind = "cache"

    def __init__(
        self,
        tensors: dict[str, torch.Tensor],
        needs: Needs,
        device: torch.device,
        directory: Path,
        meta: dict[str, Any],
        tokens: Any = None,
    ) -> None:
        self.tensors = {k: v.to(device) for k, v in tensors.items()}
        self.needs = needs
        self.directory = directory
        # a kdkit.engine.token_cache.TokenStates (host memory) when the method needs token
        # states; not imported here: token_cache imports this module
        self.tokens = tokens
        fmt = meta.get("logits_format") or {}
        self.temperature = float(fmt.get("temperature", 1.0))
        self.num_classes = int(meta["num_classes"])

    def topk(self, idx: torch.Tensor | None = None) -> TopKTeacher:
        """The top-k teacher of rows ``idx`` (default: every row) at its stored temperature."""
        t = self.tensors
        pick = (lambda v: v) if idx is None else (lambda v: v[idx])
        return TopKTeacher(
            indices=pick(t["topk_indices"]),
            logprobs=pick(t["topk_logprobs"]),
            tail_logmass=pick(t["tail"]),
            temperature=self.temperature,
            num_classes=self.num_classes,
        )

    @property
    def logits(self) -> torch.Tensor:
        """``[N, C]`` dense reconstruction of the whole split (:func:`dense_logits`)."""
        return dense_logits(self.topk())

    def __call__(self, batch: Batch) -> ModelOutput:
        """The cached outputs of ``batch.index`` rows: ``topk`` and its dense ``logits`` (and the
        token states, attention mask and offsets of an entry that holds token states)."""
        idx = batch.index.to(self.tensors["topk_indices"].device)
        top = self.topk(idx)
        pooled = {
            int(k.split(".")[1]): v[idx] for k, v in self.tensors.items() if k.startswith("pooled.")
        }
        emb = self.tensors.get("embedding")
        out = ModelOutput(
            logits=dense_logits(top),
            pooled=pooled,
            embedding=None if emb is None else emb[idx],
            topk=top,
        )
        return out if self.tokens is None else self.tokens.attach(out, batch, idx.device)
