"""Numerics shared by the references: the max subtracted before a temperature scaling."""

from __future__ import annotations

import torch


def shifted(z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``z - max z`` along ``dim`` (a finite max; slices of only ``-inf`` stay ``-inf``).

    Subtracting the raw max *before* any ``1/T`` scaling keeps softmaxes of large logits
    (``|z| ~ 1e4``) as accurate as the logits themselves: ``z / T`` rounds every entry at the
    scale of ``|z|``, ``(z - max) / T`` only at the scale of the differences that matter. The max
    is a constant per slice (detached), so the value and the gradient are those of ``z``.
    """
    m = z.detach().amax(dim, keepdim=True)
    return z - torch.where(torch.isfinite(m), m, torch.zeros_like(m))
