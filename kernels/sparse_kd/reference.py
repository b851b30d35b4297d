"""Sparse KD over top-k(+tail) teacher probabilities: the PyTorch reference (the spec, the CPU path).

Per row, with the teacher's buckets at the loss temperature ``T`` (``p_i`` for the ``k`` top-k
classes ``K``, ``q`` for the tail) and the student's ``s = softmax(z_s / T)`` collapsed onto the
same ``k + 1`` buckets (``s_i`` for ``i in K``, ``r = 1 - sum_K s_i = sum_{c not in K} s_c``)::

    loss_row = T^2 * ( sum_{i in K} p_i (log p_i - log s_i) + q (log q - log r) )

and ``dloss_row / dz_c = T (s_c - p_c)`` for ``c in K``, ``T s_c (1 - q / r)`` elsewhere.
``r`` is a log-sum-exp over the masked row (never ``1 - sum``, which cancels).
"""

from __future__ import annotations

import torch

from kdkit.errors import KdkitError
from kdkit.kernels.kd.reference import label_error
from kdkit.kernels.numerics import shifted
from kdkit.kernels.sparse_kd.topk import TopKTeacher, _tail_logsumexp, bucket_logprobs

REDUCTIONS = ("mean", "sum", "none")
WHERE = "sparse_kd_loss"


def check_sparse_args(
    student_logits: torch.Tensor,
    topk: TopKTeacher,
    temperature: float,
    labels: torch.Tensor | None,
    reduction: str,
) -> None:
    """Raise a :class:`KdkitError` for inputs ``sparse_kd_loss`` cannot take (shapes only: no
    host sync; :func:`bad_input_flags` checks the values)."""
    if not isinstance(topk, TopKTeacher):
        raise KdkitError(
            f"topk must be a TopKTeacher, got {type(topk).__name__}",
            where=f"{WHERE}(topk=...)",
            fix="build it with kdkit.kernels.topk_teacher(teacher_logits, k, temperature)",
        )
    if student_logits.dim() != 2:
        raise KdkitError(
            f"student logits must be [N, C]; got {tuple(student_logits.shape)}",
            where=WHERE,
            fix="flatten token dimensions first: logits.reshape(-1, C)",
        )
    n, c = student_logits.shape
    idx, lp, lq = topk.indices, topk.logprobs, topk.tail_logmass
    if idx.dim() != 2 or idx.shape[0] != n or lp.shape != idx.shape or lq.shape != (n,):
        raise KdkitError(
            f"topk must hold indices [N, k], logprobs [N, k] and tail_logmass [N] for N={n} "
            f"rows; got {tuple(idx.shape)}, {tuple(lp.shape)}, {tuple(lq.shape)}",
            where=f"{WHERE}(topk=...)",
            fix="build topk from the teacher logits of the same rows as the student logits",
        )
    if topk.logits is not None and topk.logits.shape != idx.shape:
        raise KdkitError(
            f"topk.logits must be [N, k]={tuple(idx.shape)}; got {tuple(topk.logits.shape)}",
            where=f"{WHERE}(topk=...)",
        )
    k = idx.shape[1]
    if not 1 <= k <= c:
        raise KdkitError(
            f"the teacher's top-k has k={k} entries per row but the student has C={c} classes "
            "(k must be in [1, C])",
            where=f"{WHERE}(topk=...)",
            fix="build topk with k <= C from teacher logits over the student's classes",
        )
    if idx.dtype not in (torch.int32, torch.int64):
        raise KdkitError(
            f"topk.indices must be int32 or int64, got {idx.dtype}", where=f"{WHERE}(topk=...)"
        )
    if not temperature > 0:
        raise KdkitError(
            f"temperature must be > 0, got {temperature}", where=f"{WHERE}(temperature=...)"
        )
    if reduction not in REDUCTIONS:
        raise KdkitError(
            f"unknown reduction {reduction!r}",
            where=f"{WHERE}(reduction=...)",
            fix=f"use one of: {', '.join(REDUCTIONS)}",
        )
    if labels is not None and labels.shape != (n,):
        raise KdkitError(
            f"labels must be [N]={n}; got {tuple(labels.shape)}", where=f"{WHERE}(labels=...)"
        )


def bad_input_flags(
    indices: torch.Tensor,  # [N, k]
    c: int,
    labels: torch.Tensor | None,
    ignore_index: int,
) -> torch.Tensor:
    """``[3]`` bool on the device: (a label outside ``[0, C)`` that is not ``ignore_index``,
    an index outside ``[0, C)``, a row with a repeated index). Read once by the caller."""
    k = indices.shape[1]
    idx = indices.long()
    out_of_range = ((idx < 0) | (idx >= c)).any()
    srt = idx.sort(dim=1).values
    dup = (srt[:, 1:] == srt[:, :-1]).any() if k > 1 else out_of_range & False
    if labels is None:
        bad_label = out_of_range & False
    else:
        bad_label = ((labels != ignore_index) & ((labels < 0) | (labels >= c))).any()
    return torch.stack([bad_label, out_of_range, dup])


def raise_for_flags(flags: torch.Tensor, c: int, ignore_index: int) -> None:
    """Raise the :class:`KdkitError` that the first set flag of :func:`bad_input_flags` names."""
    bad_label, out_of_range, dup = (bool(v) for v in flags.tolist())  # one host read
    if bad_label:
        raise label_error(c, ignore_index, f"{WHERE}(labels=...)")
    if out_of_range:
        raise KdkitError(
            f"topk.indices must be class ids in [0, {c}); some are outside that range",
            where=f"{WHERE}(topk=...)",
            fix="build topk from teacher logits over the same C classes as the student",
        )
    if dup:
        raise KdkitError(
            "topk.indices repeat a class id within a row (each top-k entry must be a distinct class)",
            where=f"{WHERE}(topk=...)",
            fix="build topk with kdkit.kernels.topk_teacher (torch.topk never repeats an index)",
        )


def row_weights(
    n: int,
    labels: torch.Tensor | None,
    ignore_index: int,
    temperature: float,
    t2_scaling: bool,
    reduction: str,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``[N]`` weight of each row's KL (``T^2`` and the mean's ``1/n_rows``; 0 for ignored rows)."""
    scale = temperature * temperature if t2_scaling else 1.0
    if labels is None:
        valid = torch.ones(n, dtype=torch.bool, device=device)
    else:
        valid = labels.to(device) != ignore_index
    w = valid.to(dtype) * scale
    if reduction == "mean":
        w = w / valid.sum().clamp_min(1).to(dtype)
    return w


def sparse_kd_loss_reference(
    student_logits: torch.Tensor,  # [N, C]
    topk: TopKTeacher,
    temperature: float = 1.0,
    labels: torch.Tensor | None = None,  # [N]
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
    t2_scaling: bool = True,
) -> torch.Tensor:
    """``T^2 KL(p_t || s)`` over the ``k + 1`` buckets of ``topk`` (see the module doc).

    The teacher's buckets are taken at ``temperature`` (:func:`rescale` when ``topk`` was stored at
    another one). Rows labelled ``ignore_index`` give 0. ``reduction``: ``"mean"`` over the other
    rows (0 when there are none), ``"sum"``, or ``"none"`` (``[N]``). Maths in float32 (float64
    for float64 student logits); the teacher never receives a gradient.
    """
    check_sparse_args(student_logits, topk, temperature, labels, reduction)
    n, c = student_logits.shape
    raise_for_flags(bad_input_flags(topk.indices, c, labels, ignore_index), c, ignore_index)
    acc = torch.float64 if student_logits.dtype == torch.float64 else torch.float32
    w = row_weights(
        n, labels, ignore_index, temperature, t2_scaling, reduction, student_logits.device, acc
    )
    # ignored rows are never evaluated (a row of -inf logits would give NaN gradients through
    # where's other branch): they see zeros, and their gradient is exactly 0
    zs = torch.where((w != 0).unsqueeze(1), student_logits.to(acc), 0.0)  # [N, C]
    idx = topk.indices.long()  # [N, k]
    log_p, log_q = bucket_logprobs(topk, temperature, dtype=acc, num_classes=c)  # [N, k], [N]
    log_p, log_q = log_p.detach(), log_q.detach()
    log_s = torch.log_softmax(shifted(zs) / temperature, dim=-1)  # [N, C]
    log_s_k = log_s.gather(1, idx)  # [N, k]
    log_r = _tail_logsumexp(log_s, idx)  # [N]: log of the student's tail bucket
    p, q = log_p.exp(), log_q.exp()
    # 0 * (-inf) guards: a bucket the teacher gives no mass contributes exactly 0
    top = torch.where(p > 0, p * (torch.where(p > 0, log_p, 0.0) - log_s_k), 0.0).sum(1)
    tail = torch.where(q > 0, q * (torch.where(q > 0, log_q, 0.0) - log_r), 0.0)
    per_row = torch.where(w != 0, w * (top + tail), 0.0)  # [N]
    return per_row if reduction == "none" else per_row.sum()
