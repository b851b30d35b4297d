"""DIST (Huang et al., 2022): the PyTorch reference.

``loss = beta * (1 - mean_i rho(p_s[i, :], p_t[i, :])) + gamma * (1 - mean_c rho(p_s[:, c], p_t[:, c]))``
with ``p = softmax(z / T)`` and the Pearson correlation

``rho(a, b) = sum (a - mean a)(b - mean b) / sqrt(sum (a - mean a)^2 * sum (b - mean b)^2 + EPS^2)``.

``EPS`` keeps ``rho`` and its gradient finite for constant vectors (where ``rho`` is 0). No
``T^2`` factor is applied.
"""

from __future__ import annotations

import torch

from kdkit.errors import KdkitError
from kdkit.kernels.numerics import shifted

#: Added (squared) under the square root of the Pearson denominator.
EPS = 1e-8


def pearson(a: torch.Tensor, b: torch.Tensor, dim: int = -1, eps: float = EPS) -> torch.Tensor:
    """Pearson correlation of ``a`` and ``b`` along ``dim`` with the :data:`EPS` guard."""
    a = a - a.mean(dim, keepdim=True)
    b = b - b.mean(dim, keepdim=True)
    s_ab = (a * b).sum(dim)
    s_aa = (a * a).sum(dim)
    s_bb = (b * b).sum(dim)
    return s_ab / torch.sqrt(s_aa * s_bb + eps * eps)


def check_dist_args(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> None:
    """Raise a :class:`KdkitError` for inputs ``dist_loss`` cannot take."""
    if student_logits.dim() != 2 or student_logits.shape != teacher_logits.shape:
        raise KdkitError(
            f"student and teacher logits must both be [N, C]; got {tuple(student_logits.shape)} "
            f"and {tuple(teacher_logits.shape)}",
            where="dist_loss",
        )
    if not temperature > 0:
        raise KdkitError(
            f"temperature must be > 0, got {temperature}", where="dist_loss(temperature=...)"
        )


def dist_loss_reference(
    student_logits: torch.Tensor,  # [N, C]
    teacher_logits: torch.Tensor,  # [N, C], never receives a gradient
    *,
    beta: float = 1.0,
    gamma: float = 1.0,
    temperature: float = 1.0,
) -> torch.Tensor:
    """DIST loss (inter-class term per row, intra-class term per column); 0-dim fp32 tensor."""
    check_dist_args(student_logits, teacher_logits, temperature)
    acc = torch.float64 if student_logits.dtype == torch.float64 else torch.float32
    ps = torch.softmax(shifted(student_logits.to(acc)) / temperature, dim=1)  # [N, C]
    pt = torch.softmax(shifted(teacher_logits.detach().to(acc)) / temperature, dim=1)  # [N, C]
    inter = 1.0 - pearson(ps, pt, dim=1).mean()  # rows
    intra = 1.0 - pearson(ps, pt, dim=0).mean()  # columns
    return beta * inter + gamma * intra
