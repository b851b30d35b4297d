"""Temperature KD (KL or soft CE) + hard-label CE: public op ``kd_loss``."""

from __future__ import annotations

import torch

from kdkit.kernels import dispatch
from kdkit.kernels.kd.reference import check_kd_args, kd_loss_reference

__all__ = ["kd_loss", "kd_loss_reference"]


def kd_loss(
    student_logits: torch.Tensor,  # [N, C] fp32/bf16/fp16
    teacher_logits: torch.Tensor,  # [N, C]
    labels: torch.Tensor | None = None,  # [N] int64
    *,
    temperature: float = 1.0,
    alpha: float = 1.0,
    soft: str = "kl",
    t2_scaling: bool = True,
    ignore_index: int = -100,
    row_mask: torch.Tensor | None = None,  # [N] bool
    impl: str | None = None,
) -> torch.Tensor:
    """Weighted KD loss, a 0-dim float32 tensor.

    ``loss = alpha * mean_rows(soft) + (1 - alpha) * mean_labelled_rows(CE(z_s, y))`` where, per
    row, ``soft`` is ``KL(p_t^T || p_s^T)`` (``soft="kl"``) or ``-sum p_t^T log p_s^T``
    (``soft="ce"``), times ``T^2`` when ``t2_scaling``. Rows with ``row_mask`` False are left out
    of both means; rows labelled ``ignore_index`` are left out of the hard term. ``alpha=1``
    needs no labels. Maths in float32 whatever the storage dtype; the teacher never receives a
    gradient. ``impl``: ``"auto"``, ``"reference"`` or ``"triton"`` (see ``kdkit.kernels.dispatch``).
    """
    check_kd_args(student_logits, teacher_logits, labels, alpha, soft, temperature)
    which = dispatch.choose("kd_loss", impl, (student_logits, teacher_logits))
    kwargs = dict(
        temperature=temperature,
        alpha=alpha,
        soft=soft,
        t2_scaling=t2_scaling,
        ignore_index=ignore_index,
        row_mask=row_mask,
    )
    if which == "triton":
        from kdkit.kernels.kd.triton import kd_loss_triton

        return kd_loss_triton(student_logits, teacher_logits, labels, **kwargs)
    return kd_loss_reference(student_logits, teacher_logits, labels, **kwargs)
