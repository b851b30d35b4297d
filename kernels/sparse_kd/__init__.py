"""Sparse KD over top-k(+tail) teacher probabilities: public op ``sparse_kd_loss``.

The teacher signal is a :class:`TopKTeacher` (``topk_teacher(logits, k, temperature)``: top-k
log-probabilities plus the tail bucket; :func:`rescale` moves it to another temperature). The
loss is ``T^2 KL`` between the teacher's ``k + 1`` buckets and the full student distribution
collapsed onto the same buckets (maths in ``docs/kernels.md``).
"""

from __future__ import annotations

import torch

from kdkit.kernels import dispatch
from kdkit.kernels.sparse_kd.reference import check_sparse_args, sparse_kd_loss_reference
from kdkit.kernels.sparse_kd.topk import TopKTeacher, bucket_logprobs, rescale, topk_teacher

__all__ = [
    "TopKTeacher",
    "bucket_logprobs",
    "rescale",
    "sparse_kd_loss",
    "sparse_kd_loss_reference",
    "topk_teacher",
]


def sparse_kd_loss(
    student_logits: torch.Tensor,  # [N, C] fp32/bf16/fp16
    topk: TopKTeacher,  # indices [N, k], logprobs [N, k], tail_logmass [N]
    temperature: float = 1.0,
    labels: torch.Tensor | None = None,  # [N] int64, only to leave rows out
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
    t2_scaling: bool = True,
    impl: str | None = None,
) -> torch.Tensor:
    """``T^2 KL(p_t^T || p_s^T)`` over the teacher's top-k classes plus one tail bucket.

    The student's distribution ``softmax(z_s / T)`` over all C classes is collapsed onto the
    ``k + 1`` buckets of ``topk`` (its tail is ``1 - sum of its top-k entries``). ``topk`` is
    taken at ``temperature`` (:func:`rescale` when it was stored at another one; exact when the
    temperatures match or ``k = C``). Rows whose label is ``ignore_index`` give 0 (never NaN);
    other labels must be class ids in ``[0, C)`` (there is no hard-label term). ``reduction``:
    ``"mean"`` over the other rows (0 when none), ``"sum"`` or ``"none"`` (``[N]`` fp32).
    Maths in fp32 whatever the storage dtype; the teacher never receives a gradient. ``impl``:
    ``"auto"``, ``"reference"`` or ``"triton"`` (see ``kdkit.kernels.dispatch``).
    """
    check_sparse_args(student_logits, topk, temperature, labels, reduction)
    which = dispatch.choose(
        "sparse_kd_loss",
        impl,
        (student_logits, topk.indices, topk.logprobs, topk.tail_logmass, labels),
    )
    kwargs = dict(ignore_index=ignore_index, reduction=reduction, t2_scaling=t2_scaling)
    if which == "triton":
        from kdkit.kernels.sparse_kd.triton import sparse_kd_loss_triton

        return sparse_kd_loss_triton(student_logits, topk, temperature, labels, **kwargs)
    return sparse_kd_loss_reference(student_logits, topk, temperature, labels, **kwargs)
