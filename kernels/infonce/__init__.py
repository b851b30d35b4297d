"""Student-teacher InfoNCE with in-batch negatives: public op ``infonce_loss``."""

from __future__ import annotations

import torch

from kdkit.kernels import dispatch
from kdkit.kernels.infonce.reference import check_infonce_args, infonce_loss_reference

__all__ = ["infonce_loss", "infonce_loss_reference"]


def infonce_loss(
    student: torch.Tensor,  # [B, d]
    teacher: torch.Tensor,  # [B, d]
    *,
    temperature: float = 0.07,
    normalize: bool = True,
    impl: str | None = None,
) -> torch.Tensor:
    """``mean_i CE(sim[i, :], i)`` with ``sim[i, j] = s_i . t_j / temperature``, a 0-dim fp32 tensor.

    Rows are L2-normalised first when ``normalize``. The gradient reaches the student always and
    the teacher when ``teacher.requires_grad`` (e.g. a trainable teacher-side projection).
    The Triton path never materialises the ``B x B`` matrix.
    """
    check_infonce_args(student, teacher, temperature)
    which = dispatch.choose("infonce_loss", impl, (student, teacher))
    if which == "triton":
        from kdkit.kernels.infonce.triton import infonce_loss_triton

        return infonce_loss_triton(student, teacher, temperature=temperature, normalize=normalize)
    return infonce_loss_reference(student, teacher, temperature=temperature, normalize=normalize)
