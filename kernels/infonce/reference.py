"""Student-teacher InfoNCE with in-batch negatives: the PyTorch reference.

``sim[i, j] = s_i . t_j / tau`` (rows L2-normalised first when ``normalize``), and
``loss = mean_i CE(sim[i, :], i)``. The B x B similarity matrix is materialised here; the Triton
kernel never does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdkit.errors import KdkitError
from kdkit.kernels.numerics import shifted

#: ``x / max(||x||, NORM_EPS)`` (as ``torch.nn.functional.normalize``).
NORM_EPS = 1e-12


def check_infonce_args(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> None:
    """Raise a :class:`KdkitError` for inputs ``infonce_loss`` cannot take."""
    if student.dim() != 2 or student.shape != teacher.shape:
        raise KdkitError(
            f"student and teacher embeddings must both be [B, d]; got {tuple(student.shape)} "
            f"and {tuple(teacher.shape)}",
            where="infonce_loss",
            fix="project both sides to the same width d first",
        )
    if not temperature > 0:
        raise KdkitError(
            f"temperature must be > 0, got {temperature}", where="infonce_loss(temperature=...)"
        )


def infonce_loss_reference(
    student: torch.Tensor,  # [B, d]
    teacher: torch.Tensor,  # [B, d]; gets a gradient only if it requires one
    *,
    temperature: float = 0.07,
    normalize: bool = True,
) -> torch.Tensor:
    """Mean cross-entropy of each student row against all teacher rows (target: its own)."""
    check_infonce_args(student, teacher, temperature)
    acc = torch.float64 if student.dtype == torch.float64 else torch.float32
    s = student.to(acc)
    t = teacher.to(acc)
    if normalize:
        s = F.normalize(s, dim=-1, eps=NORM_EPS)
        t = F.normalize(t, dim=-1, eps=NORM_EPS)
    # the row max is subtracted before the 1/tau scaling; then
    # CE_i = log(e^{z_ii} + off_i) - z_ii = softplus(log(off_i) - z_ii), off_i = sum_{j!=i} e^{z_ij},
    # which never subtracts two nearly equal numbers (student == teacher: a tiny, accurate loss)
    z = shifted(s @ t.T) / temperature  # [B, B], row max 0
    eye = torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
    diag = z.diagonal()  # [B]
    off = torch.where(eye, torch.zeros_like(z), z.exp()).sum(1)  # [B]
    u = torch.log(off.clamp_min(torch.finfo(z.dtype).tiny)) - diag
    return F.softplus(u).mean()
