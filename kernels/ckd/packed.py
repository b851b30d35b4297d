"""CKD relations, packed formulation: the CPU path of :func:`kdkit.kernels.ckd_loss`.

The same maths as :func:`kdkit.kernels.ckd.reference.ckd_loss_reference` (Gram entries, the same
grouping of every term and the same ``EPS``), computed only where it counts:

* **valid anchors only.** The reference builds ``[B, K, T, J, J]`` angle tensors (``J = 2W+1``)
  and masks them; with ragged rows a large share is padding. Here only the ``N`` real tokens are
  anchors, each with its ``2W`` others (the window without its centre, which the reference masks);
  others past a row's end or on padding are masked as in the reference.
* **one triangle.** ``angle(a; j, k)`` is symmetric in ``j, k``, so the ``U = W (2W - 1)`` pairs
  ``j < k`` are computed once and counted twice; the diagonal ``j == k`` (angle ~1 on both
  sides) comes from the ``2W`` others.
* **banded matmuls over half the band.** The Gram entries ``h_x . h_y`` for ``|x - y| <= 2W``
  come from batched matmuls of blocks of ``2W`` positions against themselves and their next
  block; G is symmetric, so each block's entries with its previous block are the transpose of
  that block's "next" (:func:`gram_blocks`). Not from ``4W+1`` shifted products (whose backward
  allocated and summed ``4W+1`` full-size gradients); one gather with precomputed indices picks
  every anchor's entries out.
* **a hand-written backward** for the student's word relation (:class:`_StudentWordLoss`): the
  gradient with respect to its Gram entries in a few passes over the ``[K, N, U]`` triangle
  instead of autograd's chain through every elementwise op.

Every relation is the reference's formula on the same Gram entries; only the Gram entries
(matmul instead of elementwise sums) and the order of the sums differ, so the losses and
gradients equal the reference's to fp32 rounding (``tests/kernels/test_ckd_packed.py``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from kdkit.kernels.ckd.reference import (
    EPS,
    CKDTerms,
    check_ckd_args,
    relations,
)
from kdkit.kernels.ckd.reference import _acc as to_accumulation
from kdkit.kernels.ckd.reference import _masked_mse as masked_mse


class WindowLists(NamedTuple):
    """Where the valid word-relation entries of one batch are (depends on the mask and W only).

    Anchors are the ``N`` valid tokens; each has ``2W`` others (offsets ``-W..W`` without 0) and
    ``U = W (2W - 1)`` pairs of others ``j < k``. ``index`` points every anchor's Gram entries into
    the flattened blocks of :func:`gram_blocks` padded by ``margin`` zeros at both ends (layer 0;
    add ``k * layer_stride`` for layer ``k``).
    """

    index: torch.Tensor  # [N, 1 + 2W + 2W + U] int64: G_aa, G_aj (2W), G_jj (2W), G_jk (U)
    pair_valid: torch.Tensor  # [N, 2W] 0/1 (float): the other token is real
    upper_valid: torch.Tensor  # [N, U] 0/1 (float): both others of the pair are real
    pick_j: torch.Tensor  # [2W, U] one-hot: x @ pick_j = x[..., j of each pair]
    pick_k: torch.Tensor  # [2W, U] one-hot: x @ pick_k = x[..., k of each pair]
    layer_stride: int  # entries of one layer in the flattened blocks
    margin: int  # zeros before and after the flattened blocks


def _block(window: int) -> int:
    """Positions per block of :func:`gram_blocks`: the band half-width ``2W``."""
    return 2 * window


def gram_blocks(h: torch.Tensor, window: int) -> torch.Tensor:
    """``[B, K, T, H]`` -> ``[B, K, nb, bt, 3 bt]`` (``bt = 2W``, ``nb = ceil(T / bt)``) with
    ``out[b, k, x // bt, x % bt, bt + x % bt + d] = h_x . h_{x+d}`` for ``|d| <= 2W``.

    Each block of ``bt`` positions against itself and its two neighbours (positions outside
    ``0..T-1`` are zeros). G is symmetric, so only each block against itself and against its
    *next* block are multiplied; the block against its previous one is the transpose of the
    previous block's "next" (a copy of ``bt x bt`` entries). Every ``(b, k)`` row is padded
    with one zero block and the rows are laid end to end, so both products are batched matmuls
    of plain views of the one padded copy of the states (a previous version
    concatenated three shifted copies of the states and multiplied each block by all three).
    """
    b, k, t, hd = h.shape
    bt = _block(window)
    nb = -(-t // bt)
    hp = F.pad(h, (0, 0, 0, (nb + 1) * bt - t))  # [B, K, (nb + 1) bt, H], >= one zero block
    flat = hp.reshape(-1, bt, hd)  # [M, bt, H], M = B K (nb + 1) blocks end to end
    own = flat @ flat.transpose(1, 2)  # [M, bt, bt]: G(block, itself)
    # G(block, next block); a row's zero block is last, so its real blocks' "next" is right and
    # the zero block's own products (with the next row's first block) are zeros
    nxt = F.pad(flat[:-1] @ flat[1:].transpose(1, 2), (0, 0, 0, 0, 0, 1))  # [M, bt, bt]
    # G(block, previous block) = G(previous, block)^T: the zero block before a row's first
    prev = F.pad(nxt[:-1].transpose(1, 2), (0, 0, 0, 0, 1, 0))  # [M, bt, bt]
    out = torch.cat([prev, own, nxt], dim=-1).view(b, k, nb + 1, bt, 3 * bt)
    return out[:, :, :nb]


def window_lists(mask: torch.Tensor, window: int, k: int, dtype=torch.float32) -> WindowLists:
    """The anchors of ``mask`` ``[B, T]`` and where their Gram entries are in :func:`gram_blocks`
    of ``K = k`` layers (``dtype``: that of the one-hot pickers)."""
    w, bt = window, _block(window)
    b, t = mask.shape
    dev = mask.device
    nb = -(-t // bt)
    m = mask.to(torch.bool)
    offs = torch.cat([torch.arange(-w, 0, device=dev), torch.arange(1, w + 1, device=dev)])
    uj, uk = torch.triu_indices(2 * w, 2 * w, 1, device=dev)  # [U] pairs of others, j < k
    zero = torch.zeros(1, dtype=torch.long, device=dev)
    # entry G(a + r, a + r + c): row offset r and column offset c from the anchor a
    r = torch.cat([zero, zero.expand(2 * w), offs, offs[uj]])  # [C]
    c = torch.cat([zero, offs, zero.expand(2 * w), offs[uk] - offs[uj]])
    # position x = bt * blk + q + r sits at (row_start + x) * 3bt + bt + x % bt + c, and
    # x % bt = (q + r) % bt: a table over q = a % bt, added to a per-anchor block base
    q = torch.arange(bt, device=dev).unsqueeze(-1) + r  # [bt, C]
    table = q * (3 * bt) + bt + q % bt + c
    ab, aa = m.nonzero(as_tuple=True)  # [N] anchors
    # others outside the row (masked) may point before or after the blocks: the margin holds them
    margin = (w + 2) * 3 * bt
    base = ((ab * k) * (nb * bt) + aa - aa % bt) * (3 * bt) + margin  # [N]
    index = table.index_select(0, aa % bt) + base.unsqueeze(-1)  # [N, C]
    mp = F.pad(m, (w, w), value=False)
    pair_valid = mp[ab.unsqueeze(-1), (aa + w).unsqueeze(-1) + offs]  # [N, 2W]
    u = uj.numel()
    pick_j = torch.zeros(2 * w, u, dtype=dtype, device=dev)
    pick_j[uj, torch.arange(u, device=dev)] = 1.0
    pick_k = torch.zeros(2 * w, u, dtype=dtype, device=dev)
    pick_k[uk, torch.arange(u, device=dev)] = 1.0
    # float 0/1 masks: masking by a product is ~10x cheaper than torch.where on CPU, and every
    # masked entry is finite (its Gram index is clamped inside the blocks)
    pv = pair_valid.to(dtype)
    return WindowLists(
        index=index,
        pair_valid=pv,
        upper_valid=(pv @ pick_j) * (pv @ pick_k),
        pick_j=pick_j,
        pick_k=pick_k,
        layer_stride=nb * bt * 3 * bt,
        margin=margin,
    )


def gram_entries(h: torch.Tensor, lists: WindowLists, window: int) -> torch.Tensor:
    """``[K, N, 1 + 4W + U]``: every anchor's ``G_aa, G_aj, G_jj, G_jk`` (differentiable in h)."""
    k = h.shape[1]
    flat = F.pad(gram_blocks(h, window).reshape(-1), (lists.margin, lists.margin))
    idx = lists.index
    offs = torch.arange(k, device=idx.device).view(k, 1, 1) * lists.layer_stride
    return flat.index_select(0, (idx + offs).reshape(-1)).view(k, *idx.shape)


class _Side(NamedTuple):
    """One side's word relations and what the student's backward reuses."""

    dist: torch.Tensor  # [K, N, 2W]
    diag: torch.Tensor  # [K, N, 2W] angle(a; j, j)
    upper: torch.Tensor  # [K, N, U]  angle(a; j, k), j < k
    sq_norm: torch.Tensor  # [K, N, 2W] P = (G_aa + EPS)(G_jj + EPS)
    raw: torch.Tensor  # [K, N, 2W] |h_j - h_a|^2 before clamping
    dd: torch.Tensor  # [K, N, 2W] clamped + EPS
    sd: torch.Tensor  # [K, N, 2W] sqrt(dd * dd)
    su: torch.Tensor  # [K, N, U]  sqrt(dd_j * dd_k)


def side_relations(g: torch.Tensor, lists: WindowLists, window: int) -> _Side:
    """The reference's relation formulas (:func:`kdkit.kernels.ckd.reference.relations`) on one
    side's Gram entries ``[K, N, 1 + 4W + U]`` (entries of masked others are finite garbage: the
    loss masks them)."""
    w2 = 2 * window
    g_aa, g_aj, g_jj, g_jk = g.split([1, w2, w2, g.shape[-1] - 1 - 2 * w2], dim=-1)
    p = (g_aa + EPS) * (g_jj + EPS)
    dist = 1.0 - g_aj / torch.sqrt(p)
    raw = (g_aa - g_aj) + (g_jj - g_aj)  # |h_j - h_a|^2
    dd = raw.clamp_min(0.0) + EPS
    sd = torch.sqrt(dd * dd)
    diag = ((g_jj - g_aj) - (g_aj - g_aa)) / sd
    pj, pk = lists.pick_j, lists.pick_k  # one-hot matmuls: exact gathers, cheaper on CPU
    # num = (G_jk - G_aj) - (G_ak - G_aa), the reference's grouping
    num = (g_jk - g_aj @ pj) - (g_aj - g_aa) @ pk
    su = torch.sqrt((dd @ pj) * (dd @ pk))
    return _Side(dist, diag, num / su, p, raw, dd, sd, su)


def _errors(s: _Side, t: _Side, lists: WindowLists, k: int):
    """Masked differences ``(dist, diag, upper)`` and the reference's two counts: ``K x P``
    distances and ``K x (P + 2Q)`` angles (``(j, k)`` and ``(k, j)``)."""
    pv, uv = lists.pair_valid, lists.upper_valid
    n_pair = int(pv.sum().item())
    n_dist = max(k * n_pair, 1)
    n_angle = max(k * (n_pair + 2 * int(uv.sum().item())), 1)
    e = ((s.dist - t.dist) * pv, (s.diag - t.diag) * pv, (s.upper - t.upper) * uv)
    return e, n_dist, n_angle


def _word_loss(s: _Side, t: _Side, lists: WindowLists, k: int) -> torch.Tensor:
    """The word-relation loss (differentiable through both sides by autograd)."""
    (e1, e2, e3), n_dist, n_angle = _errors(s, t, lists, k)
    return (e1 * e1).sum() / n_dist + ((e2 * e2).sum() + 2.0 * (e3 * e3).sum()) / n_angle


class _StudentWordLoss(torch.autograd.Function):
    """Word-relation loss from the student's Gram entries and the teacher's relations, with the
    gradient with respect to the student's Gram entries written by hand."""

    @staticmethod
    def forward(ctx, g, teacher: _Side, lists: WindowLists, window: int):
        """The loss from the student's entries ``g`` ``[K, N, C]`` and the teacher's relations."""
        s = side_relations(g, lists, window)
        (e1, e2, e3), n_dist, n_angle = _errors(s, teacher, lists, g.shape[0])
        loss = (e1 * e1).sum() / n_dist + ((e2 * e2).sum() + 2.0 * (e3 * e3).sum()) / n_angle
        ctx.save_for_backward(g, e1, e2, e3, s.dist, s.diag, s.upper, s.sq_norm, s.raw, s.dd)
        ctx.extra = (s.sd, s.su, lists, window, n_dist, n_angle)
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        """``dL/dg`` ``[K, N, C]`` by the chain rule through the reference's formulas."""
        g, e1, e2, e3, dist, diag, upper, p, raw, dd = ctx.saved_tensors
        sd, su, lists, window, n_dist, n_angle = ctx.extra
        w2 = 2 * window
        g_aa, g_aj, g_jj, _ = g.split([1, w2, w2, g.shape[-1] - 1 - 2 * w2], dim=-1)
        g1 = e1 * (2.0 * grad_out / n_dist)  # dL/d dist
        g2 = e2 * (2.0 * grad_out / n_angle)  # dL/d diag
        g3 = e3 * (4.0 * grad_out / n_angle)  # dL/d upper (counted twice)
        inc = (lists.pick_j + lists.pick_k).T  # [U, 2W]: the pair has that other as j or k
        # upper = num / su, su = sqrt(dd_j dd_k): d/dnum = 1/su, d/ddd_j = -upper / (2 dd_j)
        gnum = g3 / su  # [K, N, U]
        gnum_o = gnum @ inc  # [K, N, 2W]: sum over the pairs of each other
        gup_o = (g3 * upper) @ inc
        # diag = nd / sd, sd = sqrt(dd^2): d/dnd = 1/sd, d/ddd = -diag dd / sd^2
        gnd = g2 / sd
        gdd = -0.5 * gup_o / dd - g2 * diag * dd / (sd * sd)
        graw = gdd * (raw >= 0).to(g.dtype)  # clamp_min(0)'s gradient
        # dist = 1 - g_aj / sqrt(p), p = (g_aa + EPS)(g_jj + EPS)
        rp = torch.sqrt(p)
        gp = 0.5 * g1 * (1.0 - dist) / p  # = g1 g_aj / (2 p^1.5)
        # num = (G_jk - G_aj) - (G_ak - G_aa); nd = (G_jj - G_aj) - (G_aj - G_aa);
        # raw = (G_aa - G_aj) + (G_jj - G_aj)
        d_aj = -g1 / rp - gnum_o - 2.0 * gnd - 2.0 * graw
        d_jj = gp * (g_aa + EPS) + gnd + graw
        d_aa = (gp * (g_jj + EPS) + gnd + graw).sum(-1, keepdim=True) + gnum.sum(-1, keepdim=True)
        return torch.cat([d_aa, d_aj, d_jj, gnum], dim=-1), None, None, None


def layer_relation_packed(hs: torch.Tensor, ht: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The reference's layer-transforming relation (per token, across the K layers) on the real
    tokens only, with the ``K x K`` Gram matrices by broadcasting instead of a batched matmul of
    ``B T`` tiny matrices."""
    k = hs.shape[1]
    m = mask.to(torch.bool)
    off = ~torch.eye(k, dtype=torch.bool, device=hs.device)  # [K, K]
    ang = off.unsqueeze(-1) & off.unsqueeze(-2)  # [K, K, K]
    out = []
    for h in (hs, ht):
        g = (h.unsqueeze(1) * h.unsqueeze(2)).sum(-1).permute(0, 3, 1, 2)[m]  # [N, K, K]
        diag = torch.diagonal(g, dim1=-2, dim2=-1)  # [N, K]
        out.append(relations(diag, g, diag.unsqueeze(-2), g.unsqueeze(-3)))
    (ds, as_), (dt, at) = out
    return masked_mse(ds, dt, off) + masked_mse(as_, at, ang)


def ckd_loss_packed(
    student: torch.Tensor,  # [B, K, T, Hs]
    teacher: torch.Tensor,  # [B, K, T, Ht]
    mask: torch.Tensor,  # [B, T] (1 = real token)
    *,
    window: int = 10,
) -> CKDTerms:
    """:func:`kdkit.kernels.ckd.reference.ckd_loss_reference`, on the valid entries only."""
    check_ckd_args(student, teacher, mask, window)
    hs, ht = to_accumulation(student), to_accumulation(teacher)
    lists = window_lists(mask, window, hs.shape[1], hs.dtype)
    g_s = gram_entries(hs, lists, window)
    side_t = side_relations(gram_entries(ht, lists, window), lists, window)
    if ht.requires_grad:  # a teacher that needs gradients: plain autograd through both sides
        wr = _word_loss(side_relations(g_s, lists, window), side_t, lists, hs.shape[1])
    else:
        wr = _StudentWordLoss.apply(g_s, side_t, lists, window)
    return CKDTerms(wr, layer_relation_packed(hs, ht, mask))
