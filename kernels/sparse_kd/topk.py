"""The compact teacher signal of sparse KD: top-k log-probabilities plus a tail bucket.

A :class:`TopKTeacher` holds, per row, the teacher's ``k`` most probable classes at a temperature
``T``: their ids, their log-probabilities ``log p_i^(T)`` and the log of the probability mass
left over, the *tail bucket* ``log(1 - sum_i p_i^(T))``. Optionally it also keeps the raw teacher
logits of the same ``k`` entries. The ``k + 1`` buckets form a distribution (their
probabilities sum to 1).

Temperature (``docs/kernels.md``, "sparse_kd_loss"): :func:`rescale` turns values stored at ``T``
into values at ``T'``. With ``a = T / T'`` the top-k entries weigh ``p_i^a`` (``T log p_i^(T)`` is
``z_i`` up to a per-row constant, so their ratios are exact at any ``T'``), the tail a weight
``W``, and the rescaled buckets are those weights renormalised. Exact: everything when ``T' = T``
or ``k = C``. Approximate: the tail's mass at ``T' != T``, which the stored values do not
determine; it lies between two bounds (:func:`tail_log_bounds`) and ``W`` is their geometric
midpoint (``tail="midpoint"``) or ``q^a``, the tail treated as one class (``tail="bucket"``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from kdkit.errors import KdkitError
from kdkit.kernels.numerics import shifted


class TopKTeacher(NamedTuple):
    """Top-k teacher probabilities at ``temperature`` plus the tail bucket (one row per example).

    Attributes:
        indices: ``[N, k]`` int32 (or int64) class ids, distinct per row, in ``[0, C)``.
        logprobs: ``[N, k]`` float32 ``log p_i^(T)`` of those classes (``-inf`` allowed: p = 0).
        tail_logmass: ``[N]`` float32 ``log(sum of p_c^(T) over the other C - k classes)``
            (``-inf`` when ``k = C`` or when the teacher puts no mass outside its top-k).
        temperature: ``T``, the temperature the log-probabilities were taken at.
        logits: ``[N, k]`` float32 raw teacher logits of the same entries, or ``None``.
        num_classes: ``C``, the number of classes the top-k was taken from (the tail holds
            ``C - k``), or ``None`` when unknown (the loss then takes it from the student).
    """

    indices: torch.Tensor
    logprobs: torch.Tensor
    tail_logmass: torch.Tensor
    temperature: float
    logits: torch.Tensor | None = None
    num_classes: int | None = None


def _tail_logsumexp(log_p: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``log sum_{c not in indices} exp(log_p[:, c])`` per row, ``-inf`` for an empty tail.

    Computed over the masked row (never as ``log(1 - sum p_i)``, which cancels when the top-k
    holds nearly all the mass)."""
    masked = log_p.scatter(1, indices.long(), float("-inf"))  # [N, C]
    empty = torch.isneginf(masked).all(dim=1, keepdim=True)  # [N, 1]
    safe = torch.where(empty, torch.zeros_like(masked), masked)
    lse = torch.logsumexp(safe, dim=1)
    return torch.where(empty.squeeze(1), torch.full_like(lse, float("-inf")), lse)


def topk_teacher(
    logits: torch.Tensor,  # [N, C]
    k: int,
    temperature: float = 1.0,
    *,
    keep_logits: bool = False,
) -> TopKTeacher:
    """The teacher's top-``k`` log-probabilities at ``temperature`` and its tail bucket.

    ``logits`` is ``[N, C]`` (any float dtype; maths in float32, float64 for float64 input).
    Returns int32 indices sorted by decreasing probability, float32 log-probabilities and tail
    log-mass (float64 for float64 input), and, with ``keep_logits``, the raw logits of the same
    entries (then :func:`rescale` takes the top-k part from the logits themselves).
    """
    if logits.dim() != 2:
        raise KdkitError(
            f"teacher logits must be [N, C]; got {tuple(logits.shape)}",
            where="topk_teacher(logits=...)",
            fix="flatten token dimensions first: logits.reshape(-1, C)",
        )
    c = logits.shape[1]
    if not 1 <= int(k) <= c:
        raise KdkitError(
            f"k must be in [1, C={c}], got k={k}",
            where="topk_teacher(k=...)",
            fix=f"choose k <= {c} (k = C keeps the full distribution)",
        )
    if not temperature > 0:
        raise KdkitError(
            f"temperature must be > 0, got {temperature}", where="topk_teacher(temperature=...)"
        )
    acc = torch.float64 if logits.dtype == torch.float64 else torch.float32
    z = logits.detach().to(acc)
    log_p = torch.log_softmax(shifted(z) / temperature, dim=-1)  # [N, C]
    values, idx = log_p.topk(int(k), dim=-1)  # [N, k], sorted descending
    tail = _tail_logsumexp(log_p, idx)
    return TopKTeacher(
        indices=idx.to(torch.int32),
        logprobs=values,
        tail_logmass=tail,
        temperature=float(temperature),
        logits=z.gather(1, idx) if keep_logits else None,
        num_classes=c,
    )


#: How :func:`rescale` estimates the tail's mass at another temperature.
TAIL_RULES = ("midpoint", "bucket")


def tail_log_bounds(
    log_p: torch.Tensor,  # [N, k] log p_i at T
    log_q: torch.Tensor,  # [N] log q at T
    a: float,  # T / T'
    m: int,  # number of tail classes, C - k
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log L, log U)``: bounds of the tail's tempered weight ``sum_c x_c^a`` (``x_c = p_c^(T)``
    over the ``m`` tail classes, ``sum x_c = q``, each ``x_c <= p_(k)``, the smallest top-k
    probability), on the scale where a top-k entry weighs ``p_i^a``:

    * ``a >= 1`` (``T' <= T``): ``m^(1-a) q^a <= . <= min(q^a, p_(k)^(a-1) q)``;
    * ``a <= 1`` (``T' >= T``): ``max(q^a, p_(k)^(a-1) q) <= . <= m^(1-a) q^a``.

    The lower/upper ends are the uniform tail and the tail of entries as large as ``p_(k)``."""
    lpk = log_p.amin(dim=1)  # log p_(k)
    bucket = a * log_q  # log q^a
    uniform = (1.0 - a) * math.log(max(m, 1)) + a * log_q  # log m^(1-a) q^a
    capped = (a - 1.0) * lpk + log_q  # log p_(k)^(a-1) q
    if a >= 1.0:
        lo, hi = uniform, torch.minimum(bucket, capped)
    else:
        lo, hi = torch.maximum(bucket, capped), uniform
    empty = torch.isneginf(log_q)  # no tail mass (or k = C): stays 0 at any temperature
    neg_inf = torch.full_like(log_q, float("-inf"))
    return torch.where(empty, neg_inf, lo), torch.where(empty, neg_inf, hi)


def bucket_logprobs(
    topk: TopKTeacher,
    temperature: float | None = None,
    dtype: torch.dtype = torch.float32,
    *,
    tail: str = "midpoint",
    num_classes: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log p_i [N, k], log q [N])`` at ``temperature`` (default: the stored one), renormalised
    so the ``k + 1`` buckets sum to 1 exactly (in ``dtype``). See :func:`rescale` for the maths;
    ``num_classes`` (C) is needed by ``tail="midpoint"`` when ``topk.num_classes`` is unset."""
    t_new = topk.temperature if temperature is None else float(temperature)
    if not t_new > 0:
        raise KdkitError(f"temperature must be > 0, got {t_new}", where="rescale(new_temperature)")
    if tail not in TAIL_RULES:
        raise KdkitError(
            f"unknown tail rule {tail!r}",
            where="rescale(tail=...)",
            fix="use 'midpoint' or 'bucket'",
        )
    a = topk.temperature / t_new
    lp = topk.logprobs.to(dtype)  # [N, k]
    lq = topk.tail_logmass.to(dtype)  # [N]
    both = torch.cat([lp, lq.unsqueeze(1)], dim=1)  # [N, k + 1]: the buckets at T
    ref = both.amax(dim=1, keepdim=True)  # finite: the buckets sum to 1
    ref = torch.where(torch.isfinite(ref), ref, torch.zeros_like(ref))
    if a == 1.0 or tail == "bucket":
        log_w_tail = a * lq  # the tail tempered as one class
    else:
        c = num_classes if num_classes is not None else topk.num_classes
        if c is None:
            raise KdkitError(
                "the midpoint tail rule needs the number of classes C",
                where="rescale(topk, new_temperature)",
                fix="build topk with topk_teacher (it records C), pass num_classes=C, or tail='bucket'",
            )
        lo, hi = tail_log_bounds(lp, lq, a, int(c) - lp.shape[1])
        log_w_tail = torch.where(torch.isneginf(lq), lq, 0.5 * (lo + hi))  # geometric midpoint
    u_tail = (log_w_tail - a * ref.squeeze(1)).unsqueeze(1)
    if topk.logits is not None and a != 1.0:
        # top-k part from the raw logits, relative to the logit of the bucket `ref` stands for
        # when that is a top-k entry: (z_i - z_j) / T' exactly, no rounding amplified by a
        z = topk.logits.to(dtype)
        j = both[:, :-1].argmax(dim=1, keepdim=True)  # the most probable top-k entry
        lj = lp.gather(1, j)  # its log p at T
        u_top = (z - z.gather(1, j)) / t_new + a * (lj - ref)
    else:
        u_top = a * (lp - ref)
    u = torch.cat([u_top, u_tail], dim=1)
    u = torch.where(torch.isnan(u), torch.full_like(u, float("-inf")), u)  # -inf - -inf
    out = torch.log_softmax(u, dim=1)
    return out[:, :-1], out[:, -1]


def rescale(
    topk: TopKTeacher,
    new_temperature: float,
    *,
    tail: str = "midpoint",
    num_classes: int | None = None,
) -> TopKTeacher:
    """The same top-k teacher at ``new_temperature`` ``T'`` (from values stored at ``T``).

    With ``a = T / T'``: top-k weights ``p_i^a`` (``u_i = a log p_i^(T)``; from the raw logits
    when kept, ``u_i = z_i / T'`` up to the row's constant) and a tail weight ``W``, renormalised
    together: ``log_softmax([u, log W])``. The ratios among the top-k entries are exact at any
    ``T'``; everything is exact when ``T' = T`` or ``k = C`` (no tail). The tail's true weight
    ``sum_c (p_c^(T))^a`` is not determined by the stored values; it lies between the bounds of
    :func:`tail_log_bounds`. ``tail="midpoint"`` (default) takes their geometric mean (needs C:
    ``topk.num_classes`` or ``num_classes``); ``tail="bucket"`` takes ``W = q^a`` (the tail as one
    class), which lies at or beyond an end of the interval: it over-estimates the tail at
    ``T' < T`` and under-estimates it at ``T' > T`` (measured in ``docs/kernels.md``).
    """
    lp, lq = bucket_logprobs(
        topk, new_temperature, dtype=topk.logprobs.dtype, tail=tail, num_classes=num_classes
    )
    return topk._replace(logprobs=lp, tail_logmass=lq, temperature=float(new_temperature))
