"""CKD (Contextual KD, Park et al. 2021) word and layer-transforming relations: references.

Two formulations of the same maths:

* :func:`ckd_loss_reference` — the Gram formulation (the spec): distances and angles come
  from dot products ``G_xy = h_x . h_y`` only, so no ``[..., T, 2W+1, H]`` difference tensor exists
  (the CPU path, :func:`kdkit.kernels.ckd.packed.ckd_loss_packed`, computes the same formulas on
  the valid entries only);
* :func:`ckd_loss_naive` — the textbook formulation that builds the difference vectors
  ``h_j - h_i`` explicitly (for tests and benchmarks only).

Relations from Gram entries, for an anchor ``a`` and others ``j, k`` (``EPS`` guards every norm)::

    dist(a, j)     = 1 - G_aj / sqrt((G_aa + EPS) (G_jj + EPS))
    D_aj           = (G_aa - G_aj) + (G_jj - G_aj)           # = |h_j - h_a|^2, clamped >= 0
    angle(a; j, k) = ((G_jk - G_aj) - (G_ak - G_aa)) / sqrt((D_aj + EPS) (D_ak + EPS))

The grouping makes a zero-length difference (``h_j == h_a``) give exactly 0 with finite
gradients. ``j == k`` pairs are included (their angle is ~1 on both sides).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from kdkit.errors import KdkitError

#: Added to every squared norm before the square root.
EPS = 1e-8


class CKDTerms(NamedTuple):
    """The two unweighted CKD relation losses (0-dim tensors)."""

    word_relation: torch.Tensor
    layer_relation: torch.Tensor


def check_ckd_args(
    student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, window: int
) -> None:
    """Raise a :class:`KdkitError` for inputs ``ckd_loss`` cannot take."""
    if student.dim() != 4 or teacher.dim() != 4 or student.shape[:3] != teacher.shape[:3]:
        raise KdkitError(
            f"hidden states must be [B, K, T, H] with the same B, K, T on both sides; got "
            f"{tuple(student.shape)} and {tuple(teacher.shape)}",
            where="ckd_loss",
            fix="align the teacher's tokens onto the student's (character offsets) and stack "
            "the K matched layers first",
        )
    if mask.shape != (student.shape[0], student.shape[2]):
        raise KdkitError(
            f"mask must be [B, T]={student.shape[0], student.shape[2]}; got {tuple(mask.shape)}",
            where="ckd_loss(mask=...)",
        )
    if window < 1:
        raise KdkitError(f"window must be >= 1, got {window}", where="ckd_loss(window=...)")


def relations(
    g_aa: torch.Tensor,  # [...]        anchor squared norms
    g_aj: torch.Tensor,  # [..., J]     anchor . other
    g_jj: torch.Tensor,  # [..., J]     other squared norms
    g_jk: torch.Tensor,  # [..., J, J]  other . other
    eps: float = EPS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dist [..., J], angle [..., J, J])`` from Gram entries (see the module docstring)."""
    g_aa1 = g_aa.unsqueeze(-1)  # [..., 1]
    dist = 1.0 - g_aj / torch.sqrt((g_aa1 + eps) * (g_jj + eps))
    d = ((g_aa1 - g_aj) + (g_jj - g_aj)).clamp_min(0.0)  # [..., J]
    num = (g_jk - g_aj.unsqueeze(-1)) - (g_aj.unsqueeze(-2) - g_aa1.unsqueeze(-1))  # [..., J, J]
    angle = num / torch.sqrt((d.unsqueeze(-1) + eps) * (d.unsqueeze(-2) + eps))
    return dist, angle


def _masked_mse(a: torch.Tensor, b: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of ``(a - b)^2`` over ``valid`` entries (0 when there are none)."""
    sq = torch.where(valid, (a - b) ** 2, torch.zeros((), dtype=a.dtype, device=a.device))
    n = valid.expand(sq.shape).sum()  # valid may broadcast (e.g. over the K layers)
    return sq.sum() / n.clamp_min(1).to(a.dtype)


def window_valid(mask: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pair [B, T, J], angle [B, T, J, J])`` validity for the word relation, ``J = 2W+1``."""
    m = mask.to(torch.bool)  # [B, T]
    mw = F.pad(m, (window, window), value=False).unfold(1, 2 * window + 1, 1)  # [B, T, J]
    not_self = torch.ones(2 * window + 1, dtype=torch.bool, device=m.device)
    not_self[window] = False
    pair = m.unsqueeze(-1) & mw & not_self  # [B, T, J]
    return pair, pair.unsqueeze(-1) & pair.unsqueeze(-2)


def layer_valid(mask: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pair [B, T, K, K], angle [B, T, K, K, K])`` validity for the layer relation."""
    m = mask.to(torch.bool)[:, :, None, None]  # [B, T, 1, 1]
    off = ~torch.eye(k, dtype=torch.bool, device=mask.device)  # [K(l), K(m)]
    pair = m & off  # [B, T, K, K]
    return pair, pair.unsqueeze(-1) & pair.unsqueeze(-2)


def band_gram(h: torch.Tensor, width: int) -> torch.Tensor:
    """``band[..., t, width + d] = h_t . h_{t+d}`` for ``|d| <= width`` (0 outside), ``[..., T, 2*width+1]``.

    Built one offset at a time, so the largest temporary is ``[..., T, H]``.
    """
    t = h.shape[-2]
    cols = []
    for d in range(-width, width + 1):
        a = abs(d)
        if a >= t:
            cols.append(h.new_zeros(h.shape[:-1]))
            continue
        prod = (h[..., : t - a, :] * h[..., a:, :]).sum(-1)  # [..., T - |d|]
        cols.append(F.pad(prod, (0, a)) if d >= 0 else F.pad(prod, (a, 0)))
    return torch.stack(cols, dim=-1)


def word_gram(h: torch.Tensor, window: int):
    """Gram entries of the word relation for every anchor token: ``g_aa [B,K,T]``,
    ``g_aj [B,K,T,J]``, ``g_jj [B,K,T,J]``, ``g_jk [B,K,T,J,J]`` with ``J = 2W+1``."""
    w = window
    band = band_gram(h, 2 * w)  # [B, K, T, 4W+1]
    t = h.shape[-2]
    band_p = F.pad(band, (0, 0, w, w))  # [B, K, T+2W, 4W+1]
    rows = [band_p[..., a : a + t, 2 * w - a : 4 * w + 1 - a] for a in range(2 * w + 1)]
    g_jk = torch.stack(rows, dim=-2)  # [B, K, T, J, J]
    g_aj = band[..., w : 3 * w + 1]  # [B, K, T, J]
    g_aa = band[..., 2 * w]  # [B, K, T]
    g_jj = torch.diagonal(g_jk, dim1=-2, dim2=-1)  # [B, K, T, J]
    return g_aa, g_aj, g_jj, g_jk


def layer_relation_gram(hs: torch.Tensor, ht: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """LTR from the per-token ``K x K`` layer Gram matrices (shared by both paths)."""
    k = hs.shape[1]
    pair, ang_valid = layer_valid(mask, k)
    out = []
    for h in (hs, ht):
        g = torch.einsum("bkth,bmth->btkm", h, h)  # [B, T, K, K]
        diag = torch.diagonal(g, dim1=-2, dim2=-1)  # [B, T, K]
        out.append(relations(diag, g, diag.unsqueeze(-2), g.unsqueeze(-3)))
    (ds, as_), (dt, at) = out
    return _masked_mse(ds, dt, pair) + _masked_mse(as_, at, ang_valid)


def _acc(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)


def ckd_loss_reference(
    student: torch.Tensor,  # [B, K, T, Hs]
    teacher: torch.Tensor,  # [B, K, T, Ht]
    mask: torch.Tensor,  # [B, T] (1 = real token)
    *,
    window: int = 10,
) -> CKDTerms:
    """Word relation (window ``W``) and layer-transforming relation, Gram formulation."""
    check_ckd_args(student, teacher, mask, window)
    hs, ht = _acc(student), _acc(teacher)
    pair, ang_valid = window_valid(mask, window)  # [B, T, J], [B, T, J, J]
    pair, ang_valid = pair.unsqueeze(1), ang_valid.unsqueeze(1)  # broadcast over K
    (ds, as_), (dt, at) = (relations(*word_gram(h, window)) for h in (hs, ht))
    wr = _masked_mse(ds, dt, pair) + _masked_mse(as_, at, ang_valid)
    return CKDTerms(wr, layer_relation_gram(hs, ht, mask))


def ckd_loss_naive(
    student: torch.Tensor,  # [B, K, T, Hs]
    teacher: torch.Tensor,  # [B, K, T, Ht]
    mask: torch.Tensor,  # [B, T]
    *,
    window: int = 10,
    eps: float = EPS,
) -> CKDTerms:
    """The same losses from explicit difference vectors (builds ``[B, K, T, 2W+1, H]``)."""
    check_ckd_args(student, teacher, mask, window)
    w = window
    pair, ang_valid = window_valid(mask, w)
    pair, ang_valid = pair.unsqueeze(1), ang_valid.unsqueeze(1)
    rel = []
    for h in (_acc(student), _acc(teacher)):
        hw = F.pad(h, (0, 0, w, w)).unfold(2, 2 * w + 1, 1).transpose(-1, -2)  # [B, K, T, J, H]
        hi = h.unsqueeze(-2)  # [B, K, T, 1, H]
        n_i = (hi * hi).sum(-1)  # [B, K, T, 1]
        n_j = (hw * hw).sum(-1)  # [B, K, T, J]
        dist = 1.0 - (hi * hw).sum(-1) / torch.sqrt((n_i + eps) * (n_j + eps))
        v = hw - hi  # [B, K, T, J, H]  <- the tensor the Gram formulation avoids
        vv = v @ v.transpose(-1, -2)  # [B, K, T, J, J]
        nv = torch.diagonal(vv, dim1=-2, dim2=-1)  # [B, K, T, J]
        angle = vv / torch.sqrt((nv.unsqueeze(-1) + eps) * (nv.unsqueeze(-2) + eps))
        rel.append((dist, angle))
    (ds, as_), (dt, at) = rel
    wr = _masked_mse(ds, dt, pair) + _masked_mse(as_, at, ang_valid)
    # Layer relation, naively: difference vectors across the K layers, [B, T, K, K, H].
    ltr_rel = []
    for h in (_acc(student), _acc(teacher)):
        x = h.permute(0, 2, 1, 3)  # [B, T, K, H]
        n = (x * x).sum(-1)  # [B, T, K]
        dist = 1.0 - (x @ x.transpose(-1, -2)) / torch.sqrt(
            (n.unsqueeze(-1) + eps) * (n.unsqueeze(-2) + eps)
        )
        v = x.unsqueeze(-3) - x.unsqueeze(-2)  # [B, T, K(l), K(m), H] = h^m - h^l
        vv = v @ v.transpose(-1, -2)  # [B, T, K, K, K]
        nv = torch.diagonal(vv, dim1=-2, dim2=-1)  # [B, T, K, K]
        angle = vv / torch.sqrt((nv.unsqueeze(-1) + eps) * (nv.unsqueeze(-2) + eps))
        ltr_rel.append((dist, angle))
    (ds, as_), (dt, at) = ltr_rel
    pair_l, ang_l = layer_valid(mask, student.shape[1])
    ltr = _masked_mse(ds, dt, pair_l) + _masked_mse(as_, at, ang_l)
    return CKDTerms(wr, ltr)
