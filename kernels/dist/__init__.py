"""DIST (Pearson inter-/intra-class relations): public op ``dist_loss``."""

from __future__ import annotations

import warnings

import torch

from kdkit.kernels import dispatch
from kdkit.kernels.dist.reference import EPS, check_dist_args, dist_loss_reference, pearson

__all__ = ["EPS", "dist_loss", "dist_loss_reference", "pearson"]


def dist_loss(
    student_logits: torch.Tensor,  # [N, C]
    teacher_logits: torch.Tensor,  # [N, C]
    *,
    beta: float = 1.0,
    gamma: float = 1.0,
    temperature: float = 1.0,
    impl: str | None = None,
) -> torch.Tensor:
    """DIST loss, a 0-dim float32 tensor.

    ``beta * (1 - mean_i rho(p_s[i,:], p_t[i,:])) + gamma * (1 - mean_c rho(p_s[:,c], p_t[:,c]))``,
    ``p = softmax(z / T)``, ``rho`` the Pearson correlation with ``EPS`` (1e-8) added in quadrature
    under its square root. No ``T^2`` factor. With two classes the per-row term is ±1 with no
    gradient (a warning says so) and only the per-column term teaches. Teacher gets no gradient.
    """
    check_dist_args(student_logits, teacher_logits, temperature)
    if student_logits.shape[1] == 2 and beta != 0:
        warnings.warn(
            "dist_loss with 2 classes: the inter-class (per-row) Pearson term is ±1 and has no "
            "gradient; only the intra-class (per-column) term trains the student",
            stacklevel=2,
        )
    which = dispatch.choose("dist_loss", impl, (student_logits, teacher_logits))
    if which == "triton":
        from kdkit.kernels.dist.triton import dist_loss_triton

        return dist_loss_triton(
            student_logits, teacher_logits, beta=beta, gamma=gamma, temperature=temperature
        )
    return dist_loss_reference(
        student_logits, teacher_logits, beta=beta, gamma=gamma, temperature=temperature
    )
