"""Relation and feature-matching losses: plain PyTorch references (the spec, the CPU path).

Used by the ``rkd``, ``pkd``, ``fitnets`` and ``contrastive`` methods. Every function accumulates
in float32 (float64 when given float64) and returns a 0-dim tensor. Teacher-side inputs get a
gradient only when they require one (e.g. a trainable teacher-side projection).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdkit.errors import KdkitError

#: Guards divisions by a norm or a mean distance.
EPS = 1e-12


def _acc(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)


def _rows(name: str, *tensors: torch.Tensor) -> None:
    n = {t.shape[0] for t in tensors}
    if any(t.dim() != 2 for t in tensors) or len(n) != 1:
        raise KdkitError(
            f"{name} takes [N, d] features with the same N on both sides; got "
            + ", ".join(str(tuple(t.shape)) for t in tensors),
            where=name,
            fix="pool token states to one vector per example first (kdkit.features)",
        )


def pairwise_distances(x: torch.Tensor) -> torch.Tensor:
    """Euclidean distances ``[N, d] -> [N, N]`` (exactly 0 on the diagonal, finite gradients)."""
    sq = (x.unsqueeze(0) - x.unsqueeze(1)).pow(2).sum(-1)  # [N, N]
    # sqrt has an infinite gradient at 0: take it only where the distance is positive
    pos = sq > 0
    return torch.where(pos, sq.clamp_min(EPS).sqrt(), torch.zeros_like(sq))


def rkd_distance_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """RKD-D (Park et al., CVPR 2019): distance-wise relation between the samples of a batch.

    ``psi(x)_ij = ||x_i - x_j|| / mu`` with ``mu`` the mean distance over pairs ``i != j``;
    ``loss = mean_{i != j} huber(psi(s)_ij - psi(t)_ij)`` (Huber with delta 1, as
    ``smooth_l1_loss``). Invariant to the feature width and to scaling either side.

    Args:
        student: ``[N, d_s]`` features; ``teacher``: ``[N, d_t]`` features.
    """
    _rows("rkd_distance_loss", student, teacher)
    n = student.shape[0]
    if n < 2:
        return _acc(student).sum() * 0.0
    off = ~torch.eye(n, dtype=torch.bool, device=student.device)
    rel = []
    for x in (_acc(student), _acc(teacher)):
        d = pairwise_distances(x)  # [N, N]
        rel.append(d / d[off].mean().clamp_min(EPS))
    return F.smooth_l1_loss(rel[0][off], rel[1][off])


def _angles(x: torch.Tensor) -> torch.Tensor:
    """``a[i, j, k] = cos angle(x_j - x_i, x_k - x_i)``: ``[N, d] -> [N, N, N]``."""
    diff = x.unsqueeze(0) - x.unsqueeze(1)  # [N(i), N(j), d] = x_j - x_i
    unit = F.normalize(diff, dim=-1, eps=EPS)
    return unit @ unit.transpose(-1, -2)  # [N, N, N]


def rkd_angle_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """RKD-A (Park et al., CVPR 2019): angle-wise relation of every triple of samples.

    ``loss = mean_{i, j, k distinct} huber(cos∠(s_j - s_i, s_k - s_i) - cos∠(t_j - t_i, t_k - t_i))``.
    Invariant to the feature width, to scaling and to translating either side. Builds
    ``[N, N, d]`` and ``[N, N, N]`` tensors: meant for batch-sized ``N``.
    """
    _rows("rkd_angle_loss", student, teacher)
    n = student.shape[0]
    if n < 3:
        return _acc(student).sum() * 0.0
    eye = torch.eye(n, dtype=torch.bool, device=student.device)
    distinct = ~(eye.unsqueeze(2) | eye.unsqueeze(1) | eye.unsqueeze(0))  # [N, N, N]
    a_s, a_t = _angles(_acc(student)), _angles(_acc(teacher))
    return F.smooth_l1_loss(a_s[distinct], a_t[distinct])


def normalized_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """PKD's patient loss for one layer: ``mean_i || s_i/||s_i|| - t_i/||t_i|| ||^2``.

    The squared distance is *summed* over features (as in Sun et al. 2019), so the value lies in
    ``[0, 4]`` whatever the width; it equals ``2 - 2 cos(s_i, t_i)`` averaged over rows.

    Args:
        student: ``[N, d]``; teacher: ``[N, d]`` (project to a common width first).
    """
    _rows("normalized_mse", student, teacher)
    if student.shape != teacher.shape:
        raise KdkitError(
            f"normalized_mse needs equal widths; got {tuple(student.shape)} and "
            f"{tuple(teacher.shape)}",
            where="normalized_mse",
            fix="project one side to the other's width (a trainable nn.Linear)",
        )
    s = F.normalize(_acc(student), dim=-1, eps=EPS)
    t = F.normalize(_acc(teacher), dim=-1, eps=EPS)
    return (s - t).pow(2).sum(-1).mean()


def hint_mse(
    student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """FitNets' hint loss: mean squared error over the elements of real positions.

    ``student`` (already through the regressor) and ``teacher`` are ``[..., d]`` of equal shape;
    ``mask`` (``[...]``, 1 = real) restricts the mean to real rows/tokens. The mean is over
    elements (rows x features); no real rows gives 0.
    """
    if student.shape != teacher.shape:
        raise KdkitError(
            f"hint_mse needs equal shapes; got {tuple(student.shape)} and {tuple(teacher.shape)}",
            where="hint_mse",
            fix="pass the student's hint through the regressor to the teacher's width",
        )
    sq = (_acc(student) - _acc(teacher)).pow(2)  # [..., d]
    if mask is None:
        return sq.mean()
    m = mask.to(sq.dtype).unsqueeze(-1)  # [..., 1]
    return (sq * m).sum() / (m.sum() * sq.shape[-1]).clamp_min(1.0)


def infonce_with_negatives(
    student: torch.Tensor,
    teacher: torch.Tensor,
    negatives: torch.Tensor | None = None,
    *,
    temperature: float = 0.07,
    normalize: bool = True,
) -> torch.Tensor:
    """InfoNCE against in-batch teacher rows plus extra negatives (a bounded queue).

    ``sim = [s @ t.T, s @ q.T] / tau`` (``[B, B + Q]``), ``loss = mean_i CE(sim[i], i)``. With no
    negatives it equals :func:`kdkit.kernels.infonce_loss`. ``negatives`` ``[Q, d]`` never get a
    gradient (they are past, detached teacher embeddings).
    """
    _rows("infonce_with_negatives", student, teacher)
    s, t = _acc(student), _acc(teacher)
    q = None if negatives is None or negatives.numel() == 0 else _acc(negatives.detach())
    if normalize:
        s, t = F.normalize(s, dim=-1, eps=EPS), F.normalize(t, dim=-1, eps=EPS)
        q = None if q is None else F.normalize(q, dim=-1, eps=EPS)
    keys = t if q is None else torch.cat([t, q], 0)  # [B + Q, d]
    sim = s @ keys.T / temperature  # [B, B + Q]
    return F.cross_entropy(sim, torch.arange(s.shape[0], device=s.device))
