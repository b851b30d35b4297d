"""Temperature KD (KL or soft CE) + hard-label CE: public op ``kd_loss``."""

from __future__ import annotations

import torch

from kdkit.kernels import dispatch
from kdkit.kernels.kd.fused_linear import fused_linear_kd_chunked, fused_linear_kd_reference
from kdkit.kernels.kd.reference import check_kd_args, kd_loss_reference

__all__ = ["fused_linear_kd", "fused_linear_kd_reference", "kd_loss", "kd_loss_reference"]


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


def fused_linear_kd(
    student_hidden: torch.Tensor,  # [N, Hs]
    student_weight: torch.Tensor,  # [C, Hs]
    teacher_hidden: torch.Tensor,  # [N, Ht]
    teacher_weight: torch.Tensor,  # [C, Ht]
    labels: torch.Tensor | None = None,  # [N]
    *,
    student_bias: torch.Tensor | None = None,  # [C]
    teacher_bias: torch.Tensor | None = None,  # [C]
    temperature: float = 1.0,
    alpha: float = 1.0,
    soft: str = "kl",
    t2_scaling: bool = True,
    ignore_index: int = -100,
    row_mask: torch.Tensor | None = None,
    chunk_rows: int | None = None,
    impl: str | None = None,
) -> torch.Tensor:
    """``kd_loss(h_s W_s^T + b_s, h_t W_t^T + b_t, labels, ...)`` for vocabulary-sized heads.

    Same options and value as :func:`kd_loss`. The Triton path walks over chunks of
    ``chunk_rows`` rows (default ``clip(4 M // C, 64, N)``: about 4 M logits per head per chunk,
    see ``fused_linear.chunk_rows_for``) so the ``[N, C]`` logits never exist; gradients reach
    the student's hidden states, weight and bias, never the teacher's. The reference
    materialises the logits.
    """
    if alpha != 1.0 and labels is None:
        check_kd_args(
            student_hidden.new_empty(0, 0, device="meta"),
            student_hidden.new_empty(0, 0, device="meta"),
            labels,
            alpha,
            soft,
            temperature,
        )
    which = dispatch.choose(
        "fused_linear_kd", impl, (student_hidden, student_weight, teacher_hidden, teacher_weight)
    )
    kwargs = dict(
        student_bias=student_bias,
        teacher_bias=teacher_bias,
        temperature=temperature,
        alpha=alpha,
        soft=soft,
        t2_scaling=t2_scaling,
        ignore_index=ignore_index,
        row_mask=row_mask,
    )
    args = (student_hidden, student_weight, teacher_hidden, teacher_weight, labels)
    if which == "triton":
        return fused_linear_kd_chunked(*args, chunk_rows=chunk_rows, use_triton=True, **kwargs)
    return fused_linear_kd_reference(*args, **kwargs)
