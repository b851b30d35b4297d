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
* **banded matmuls over half the band.** The Gram entries ``h_x . h_y`` for ``0 <= y - x <= 2W``
  come from one batched matmul of each block of ``2W`` positions against itself and its next
  block, on one zero-padded copy of the states, layer after layer with zero blocks between
  (:func:`gram_blocks`); G is symmetric, so an earlier other's entry ``G(a, a - d)`` is read as
  ``G(a - d, a)``. Not from ``4W+1`` shifted products (whose backward allocated and summed
  ``4W+1`` full-size gradients); one gather per layer with precomputed indices (the same for
  every layer, no clamping: the zero blocks catch every index past a layer's ends) picks every
  anchor's entries out.
* **anchors last.** Every per-anchor tensor is ``[K, X, N]``: picking the two others of each
  pair copies whole rows (``index_select`` on dim 1) and summing over the pairs of each other
  adds whole rows (``index_add_``), several times cheaper on the CPU than one-hot matmuls.
* **no square root over the pairs.** ``1 / sqrt(D_j D_k)`` is the product of the others'
  ``1 / sqrt(D)``, with the absent others' set to 0: the pair mask comes with it.
* **hand-written backwards** for the student's word relation (:class:`_StudentWordLoss`: the
  gradient with respect to its Gram entries in a few passes over the ``[K, U, N]`` triangle) and
  layer relation (:class:`_StudentLayerLoss`: tiny tensors, where autograd's chain of small ops
  cost several times the arithmetic), instead of autograd through every elementwise op.
* **the teacher's side once** (:func:`teacher_relations`, :class:`TeacherRelations`): it does not
  depend on the student, so a caller can compute it once per example and pass it instead of the
  teacher's states (``kdkit.plugins.methods.ckd`` keeps it between epochs).

Every relation is the reference's formula on the same Gram entries; only the Gram entries
(matmul instead of elementwise sums), the order of the sums and the pairs' ``1 / sqrt`` (a
product of two) differ, so the losses and gradients equal the reference's to fp32 rounding
(``tests/kernels/test_ckd_packed.py``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from kdkit.errors import KdkitError
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
    ``U = W (2W - 1)`` pairs of others ``j < k``. ``index`` points every anchor's Gram entries
    into the flattened blocks of :func:`gram_blocks` of layer 0; layer ``l``'s are
    ``l * layer_stride`` further on (:func:`gather_entries`). Anchors are the last dimension
    (see the module docstring: "anchors last").
    """

    index: torch.Tensor  # [1 + 2W + 2W + U, N] int32 (int64 if needed): G_aa, G_aj, G_jj, G_jk
    pair_valid: torch.Tensor  # [2W, N] 0/1 (float): the other token is real
    layers: int  # K
    layer_stride: int  # entries between one layer's blocks and the next's (see gram_blocks)
    pair_j: torch.Tensor  # [U] int64: the first other (j) of each pair
    pair_k: torch.Tensor  # [U] int64: the second (k)


def _block(window: int) -> int:
    """Positions per block of :func:`gram_blocks`: the band half-width ``2W``."""
    return 2 * window


def gram_blocks(h: torch.Tensor, window: int) -> torch.Tensor:
    """``[B, K, T, H]`` -> ``[M, bt, 2 bt]`` (``bt = 2W``, ``M = 1 + K (B ceil(T / bt) + 1)``):
    the Gram entries of every position with itself and the ``2 bt - 1`` positions after it.

    Layer by layer, the rows are padded with zeros to whole blocks of ``bt`` positions and laid
    end to end, with a zero block before the first layer and after each (position ``X`` of the
    whole layout), and ``out[m, q, p] = h_X . h_{X - q + p}`` with ``X = m bt + q``: block ``m``
    against itself and its next block (:class:`_BlockProducts`). Every entry ``G(x, x + d)``,
    ``0 <= d <= 2W``, of a row is there; G is symmetric, so ``d < 0`` reads ``G(x + d, x)`` (see
    :func:`window_lists`). Past a row's end the entries read its zero padding or the next row,
    and past a layer's first or last row its zero blocks: finite values that the masks drop, and
    the entries ``G(x, x)`` read as squared norms are never negative.
    """
    b, k, t, hd = h.shape
    bt = _block(window)
    nb = -(-t // bt)
    per_layer = b * nb + 1  # blocks of one layer and the zero block after it
    m = 1 + k * per_layer
    rows = h.new_zeros(m * bt + bt, hd)  # [positions, H]: the blocks and one zero block more
    layers = rows[bt : bt + k * per_layer * bt].view(k, per_layer * bt, hd)
    layers[:, : b * nb * bt].view(k, b, nb * bt, hd)[:, :, :t] = h.transpose(0, 1)
    return _BlockProducts.apply(rows, m, bt)


def block_norms(blocks: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``[B, K, T]``: the squared norms ``G(x, x)`` of the states of ``shape`` ``[B, K, T, H]``
    in their :func:`gram_blocks` (a view of the blocks' diagonals)."""
    b, k, t, _ = shape
    bt = blocks.shape[1]
    nb = -(-t // bt)
    diag = torch.diagonal(blocks, dim1=1, dim2=2)[1:]  # [M - 1, bt]: without the first zero block
    per_layer = diag.view(k, b * nb + 1, bt)[:, : b * nb]  # [K, B nb, bt]
    return per_layer.reshape(k, b, nb * bt)[:, :, :t].transpose(0, 1)


def _layer_stride(b: int, t: int, window: int) -> int:
    """Entries of :func:`gram_blocks` between a layer's blocks and the next layer's."""
    bt = _block(window)
    return (b * -(-t // bt) + 1) * bt * 2 * bt


def _windows(rows: torch.Tensor, m: int, bt: int) -> torch.Tensor:
    """``[M, 2bt, H]``: block ``m`` and its next one, a view (consecutive windows overlap)."""
    hd = rows.shape[-1]
    return rows.as_strided((m, 2 * bt, hd), (bt * hd, hd, 1))


class _BlockProducts(torch.autograd.Function):
    """``rows [M bt + bt, H]`` -> ``[M, bt, 2bt]``: each block of ``bt`` rows against itself and
    its next block, as one batched matmul against the ``2bt``-row windows (a view: one product
    of twice the width runs faster on the CPU than two), with a backward of three products
    accumulated in place instead of autograd's four and their sums."""

    @staticmethod
    def forward(ctx, rows, m: int, bt: int):
        """The products; saves the rows."""
        own = rows[: m * bt].view(m, bt, -1)  # [M, bt, H]
        ctx.save_for_backward(rows)
        ctx.m_bt = (m, bt)
        return torch.bmm(own, _windows(rows, m, bt).transpose(1, 2))

    @staticmethod
    def backward(ctx, grad):
        """``dL/drows``: a block gets its own rows' and its windows' gradients."""
        (rows,) = ctx.saved_tensors
        m, bt = ctx.m_bt
        own, win = rows[: m * bt].view(m, bt, -1), _windows(rows, m, bt)
        # d_own = grad @ win, then grad^T @ own in its two halves (the block's own rows and its
        # next block's), accumulated in place: no [M, 2bt, H] temporary
        d = own.new_empty(m * bt + bt, own.shape[-1])
        d[m * bt :].zero_()
        torch.bmm(grad, win, out=d[: m * bt].view(m, bt, -1))
        d[: m * bt].view(m, bt, -1).baddbmm_(grad[:, :, :bt].transpose(1, 2), own)
        d[bt:].view(m, bt, -1).baddbmm_(grad[:, :, bt:].transpose(1, 2), own)
        return d, None, None


def window_lists(mask: torch.Tensor, window: int, k: int, dtype=torch.float32) -> WindowLists:
    """The anchors of ``mask`` ``[B, T]`` and where their Gram entries are in :func:`gram_blocks`
    of ``K = k`` layers (``dtype``: that of the float pair mask)."""
    w, bt = window, _block(window)
    b, t = mask.shape
    dev = mask.device
    nb = -(-t // bt)
    m = mask.to(torch.bool)
    offs = torch.cat([torch.arange(-w, 0, device=dev), torch.arange(1, w + 1, device=dev)])
    uj, uk = torch.triu_indices(2 * w, 2 * w, 1, device=dev)  # [U] pairs of others, j < k
    zero = torch.zeros(1, dtype=torch.long, device=dev)
    # entry G(a + r, a + r + c): row offset r and column offset c >= 0 from the anchor a (G_aj of
    # an earlier other, c < 0, is read as G(a + c, a): G is symmetric; pairs j < k have c > 0)
    r = torch.cat([zero, offs.clamp_max(0), offs, offs[uj]])  # [C]
    c = torch.cat([zero, offs.abs(), zero.expand(2 * w), offs[uk] - offs[uj]])
    # position x = a + r of block (a - q) / bt + (q + r) // bt, q = a % bt: a table over q, added
    # to the anchor's block; entry (x, x + c) of block m is m bt 2bt + (x % bt)(2bt + 1) + c
    qr = torch.arange(bt, device=dev).unsqueeze(-1) + r  # [bt, C]
    per_block = bt * 2 * bt
    table = torch.div(qr, bt, rounding_mode="floor") * per_block + (qr % bt) * (2 * bt + 1) + c
    ab, aa = m.nonzero(as_tuple=True)  # [N] anchors
    # layer 0's blocks start after the first zero block; an other before a layer's first row
    # or after its last reads a zero block (r and r + c stay within one block of the anchor's)
    block = 1 + ab * nb + torch.div(aa, bt, rounding_mode="floor")  # [N]
    # rows of the table, then one transposing copy (a column gather is ~6x slower on the CPU);
    # int32 (half the bytes to read and write) unless a layer's entries could overflow it
    stride = _layer_stride(b, t, window)
    itype = torch.int32 if 2 * stride < 2**31 else torch.int64
    index = table.to(itype).index_select(0, aa % bt).T.contiguous()  # [C, N]
    index += (block * per_block).to(itype)
    mp = F.pad(m, (w, w), value=False)
    pair_valid = mp[ab.unsqueeze(0), (aa + w).unsqueeze(0) + offs.unsqueeze(-1)]  # [2W, N]
    # float 0/1 masks: masking by a product is ~10x cheaper than torch.where on CPU, and every
    # masked entry is finite (see gram_blocks)
    return WindowLists(
        index=index,
        pair_valid=pair_valid.to(dtype),
        layers=k,
        layer_stride=stride,
        pair_j=uj,
        pair_k=uk,
    )


def _split_entries(x: torch.Tensor, window: int) -> tuple[torch.Tensor, ...]:
    """``[K, C, N]`` entries (or their gradients) -> views ``(aa [K, 1, N], aj [K, 2W, N],
    jj [K, 2W, N], jk [K, U, N])``."""
    w2 = 2 * window
    return x.split([1, w2, w2, x.shape[1] - 1 - 2 * w2], dim=1)


def _layer_views(blocks: torch.Tensor, lists: WindowLists) -> list[torch.Tensor]:
    """Each layer's part of the flattened :func:`gram_blocks` that :attr:`WindowLists.index`
    points into (consecutive layers share a zero block)."""
    stride = lists.layer_stride
    return [blocks[layer * stride : (layer + 1) * stride + stride] for layer in range(lists.layers)]


def gather_entries(blocks: torch.Tensor, lists: WindowLists) -> torch.Tensor:
    """``[K, C, N]`` Gram entries of :attr:`WindowLists.index` from the flattened
    :func:`gram_blocks` (differentiable in ``blocks``)."""
    index = lists.index
    flat = index.reshape(-1)
    views = _layer_views(blocks, lists)
    if blocks.requires_grad and torch.is_grad_enabled():
        return torch.stack([view.index_select(0, flat) for view in views]).view(
            lists.layers, *index.shape
        )
    out = blocks.new_empty(lists.layers, flat.numel())  # gathered in place: no stack
    for view, part in zip(views, out, strict=True):
        torch.index_select(view, 0, flat, out=part)
    return out.view(lists.layers, *index.shape)


def scatter_entries(grad: torch.Tensor, lists: WindowLists, size: int) -> torch.Tensor:
    """The flattened blocks' gradient ``[size]`` from that of their entries ``[K, C, N]``."""
    out = grad.new_zeros(size)
    flat = lists.index.reshape(-1)
    for view, part in zip(_layer_views(out, lists), grad, strict=True):
        view.index_add_(0, flat, part.reshape(-1))
    return out


def gram_entries(h: torch.Tensor, lists: WindowLists, window: int) -> torch.Tensor:
    """``[K, 1 + 4W + U, N]``: every anchor's ``G_aa, G_aj, G_jj, G_jk`` (differentiable in h)."""
    return gather_entries(gram_blocks(h, window).reshape(-1), lists)


class _Side(NamedTuple):
    """One side's word relations and what the student's backward reuses."""

    dist: torch.Tensor  # [K, 2W, N]
    diag: torch.Tensor  # [K, 2W, N] angle(a; j, j)
    upper: torch.Tensor  # [K, U, N]  angle(a; j, k), j < k, 0 unless both others are real
    sq_norm: torch.Tensor  # [K, 2W, N] P = (G_aa + EPS)(G_jj + EPS)
    raw: torch.Tensor  # [K, 2W, N] |h_j - h_a|^2 before clamping
    dd: torch.Tensor  # [K, 2W, N] clamped + EPS
    sd: torch.Tensor  # [K, 2W, N] sqrt(dd * dd)
    rr: torch.Tensor  # [K, U, N]  1 / sqrt(dd_j dd_k) where both others are real, else 0


def side_relations(g: torch.Tensor, lists: WindowLists, window: int) -> _Side:
    """The reference's relation formulas (:func:`kdkit.kernels.ckd.reference.relations`) on one
    side's Gram entries ``[K, 1 + 4W + U, N]`` (entries of masked others are finite garbage:
    ``dist`` and ``diag`` keep them, the loss masks them; ``upper`` is 0 there)."""
    g_aa, g_aj, g_jj, g_jk = _split_entries(g, window)
    p = (g_aa + EPS) * (g_jj + EPS)
    dist = 1.0 - g_aj / torch.sqrt(p)
    raw = (g_aa - g_aj) + (g_jj - g_aj)  # |h_j - h_a|^2
    dd = raw.clamp_min(0.0) + EPS
    sd = torch.sqrt(dd * dd)
    diag = ((g_jj - g_aj) - (g_aj - g_aa)) / sd
    pj, pk = lists.pair_j, lists.pair_k
    # num = (G_jk + G_aa) - (G_aj + G_ak): the reference's (G_jk - G_aj) - (G_ak - G_aa) to
    # rounding; a zero-length difference (h_j == h_a: G_jk == G_ak, G_aj == G_aa) still gives 0
    num = (g_jk + g_aa) - (g_aj.index_select(1, pj) + g_aj.index_select(1, pk))
    # 1 / sqrt(dd_j dd_k) as a product of the others' 1 / sqrt(dd), the absent ones' set to 0:
    # the pair mask comes free, and no square root or division runs over the U pairs
    rs = torch.rsqrt(dd) * lists.pair_valid
    rr = rs.index_select(1, pj) * rs.index_select(1, pk)
    return _Side(dist, diag, num * rr, p, raw, dd, sd, rr)


def _counts(lists: WindowLists, k: int) -> tuple[int, int]:
    """The reference's two counts: ``K x P`` distances and ``K x (P + 2Q)`` angles (``(j, k)``
    and ``(k, j)``), at least 1 each."""
    real = lists.pair_valid.sum(0)  # [N] real others of each anchor
    n_pair = int(real.sum().item())
    n_dist = max(k * n_pair, 1)
    n_upper = int((real * (real - 1)).sum().item()) // 2  # pairs j < k of real others
    n_angle = max(k * (n_pair + 2 * n_upper), 1)
    return n_dist, n_angle


def _errors(s: _Side, t, lists: WindowLists):
    """Masked differences ``(dist, diag, upper)`` of one side's relations and the other's (whose
    ``upper`` is 0 where a pair's other is absent, as :func:`side_relations` makes it)."""
    pv = lists.pair_valid
    return (s.dist - t.dist) * pv, (s.diag - t.diag) * pv, s.upper - t.upper


def _word_loss(s: _Side, t: _Side, lists: WindowLists, k: int) -> torch.Tensor:
    """The word-relation loss (differentiable through both sides by autograd)."""
    e1, e2, e3 = _errors(s, t, lists)
    n_dist, n_angle = _counts(lists, k)
    return (e1 * e1).sum() / n_dist + ((e2 * e2).sum() + 2.0 * (e3 * e3).sum()) / n_angle


class _StudentWordLoss(torch.autograd.Function):
    """Word-relation loss from the student's flattened Gram blocks and the teacher's relations,
    with the gradient with respect to the blocks written by hand."""

    @staticmethod
    def forward(ctx, blocks, teacher, lists: WindowLists, window: int):
        """The loss from the student's blocks ``[M bt 2bt]`` and the teacher's relations."""
        n_dist, n_angle = _counts(lists, lists.layers)
        g = gather_entries(blocks, lists)
        s = side_relations(g, lists, window)
        e1, e2, e3 = _errors(s, teacher, lists)
        ctx.save_for_backward(blocks)
        ctx.extra = (g, s, e1, e2, e3, lists, window, n_dist, n_angle)
        return _sq(e1) / n_dist + (_sq(e2) + 2.0 * _sq(e3)) / n_angle

    @staticmethod
    def backward(ctx, grad_out):
        """``dL/dblocks`` by the chain rule through the reference's formulas."""
        (blocks,) = ctx.saved_tensors
        g, s, e1, e2, e3, lists, window, n_dist, n_angle = ctx.extra
        ctx.extra = None  # free the saved relations with the graph
        dg = _entry_grad(g, s, e1, e2, e3, lists, window, grad_out / n_dist, grad_out / n_angle)
        return scatter_entries(dg, lists, blocks.numel()), None, None, None


def _sq(x: torch.Tensor) -> torch.Tensor:
    """``(x * x).sum()`` in one pass (a dot product of the flattened tensor with itself)."""
    flat = x.reshape(-1)
    return torch.dot(flat, flat)


def _per_other(x: torch.Tensor, lists: WindowLists) -> torch.Tensor:
    """``[K, U, N]`` -> ``[K, 2W, N]``: for each other, the sum over the pairs it is in."""
    k, _, n = x.shape
    out = x.new_zeros(k, lists.pair_valid.shape[0], n)
    return out.index_add_(1, lists.pair_j, x).index_add_(1, lists.pair_k, x)


def _entry_grad(
    g, s: _Side, e1, e2, e3, lists: WindowLists, window: int, per_dist, per_angle
) -> torch.Tensor:
    """``dL/dg`` ``[K, C, N]`` of the Gram entries (``per_dist = dL/dloss / n_dist``,
    ``per_angle`` likewise)."""
    g_aa, g_aj, g_jj, _ = _split_entries(g, window)
    out = torch.empty_like(g)  # [K, C, N]: dL/dG_aa, dL/dG_aj, dL/dG_jj, dL/dG_jk
    o_aa, o_aj, o_jj, o_jk = _split_entries(out, window)
    g1 = e1 * (2.0 * per_dist)  # dL/d dist
    g2 = e2 * (2.0 * per_angle)  # dL/d diag
    g3 = e3 * (4.0 * per_angle)  # dL/d upper (counted twice)
    # upper = num rr, rr = 1 / sqrt(dd_j dd_k): d/dnum = rr, d/ddd_j = -upper / (2 dd_j)
    gnum = torch.mul(g3, s.rr, out=o_jk)  # [K, U, N]: written where it goes
    gnum_o = _per_other(gnum, lists)  # [K, 2W, N]
    gup_o = _per_other(g3 * s.upper, lists)
    # diag = nd / sd, sd = sqrt(dd^2): d/dnd = 1/sd, d/ddd = -diag dd / sd^2
    gnd = g2 / s.sd
    gdd = -0.5 * gup_o / s.dd - g2 * s.diag * s.dd / (s.sd * s.sd)
    graw = gdd * (s.raw >= 0).to(g.dtype)  # clamp_min(0)'s gradient
    # dist = 1 - g_aj / sqrt(p), p = (g_aa + EPS)(g_jj + EPS)
    p = s.sq_norm
    gp = 0.5 * g1 * (1.0 - s.dist) / p  # = g1 g_aj / (2 p^1.5)
    # num = (G_jk + G_aa) - (G_aj + G_ak); nd = (G_jj - G_aj) - (G_aj - G_aa);
    # raw = (G_aa - G_aj) + (G_jj - G_aj)
    d_aj = -g1 / torch.sqrt(p) - gnum_o - 2.0 * gnd - 2.0 * graw
    d_jj = gp * (g_aa + EPS) + gnd + graw
    d_aa = (gp * (g_jj + EPS) + gnd + graw).sum(1, keepdim=True) + gnum.sum(1, keepdim=True)
    o_aa.copy_(d_aa)
    o_aj.copy_(d_aj)
    o_jj.copy_(d_jj)
    return out


def layer_gram(h: torch.Tensor, norms: torch.Tensor | None = None) -> torch.Tensor:
    """``[B, K, T, H]`` -> ``[K, K, B, T]``: every token's Gram matrix across the ``K`` layers
    (tokens last, so that the relations' elementwise ops run along them).

    ``norms`` ``[B, K, T]``: the squared norms when the caller has them (the word relation's
    ``G_aa``); then only the ``K (K - 1) / 2`` cross-layer products are computed. Slices and one
    stack, no gather: the backward of a gather of the real tokens' states (a scatter into
    zeros of the states' size) cost more than the products.
    """
    b, k, t, _ = h.shape
    if norms is None:
        norms = (h * h).sum(-1)
    cross = {(i, j): (h[:, i] * h[:, j]).sum(-1) for i in range(k) for j in range(i + 1, k)}
    cols = [
        norms[:, i] if i == j else cross[min(i, j), max(i, j)] for i in range(k) for j in range(k)
    ]
    return torch.stack(cols).view(k, k, b, t)


def layer_side(
    h: torch.Tensor, mask: torch.Tensor, norms: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One side's layer-transforming relations on the ``N`` real tokens of ``mask``: ``(dist
    [N, K, K], angle [N, K, K, K])``, the reference's formulas on the per-token ``K x K`` Gram
    matrices of :func:`layer_gram` (``norms`` ``[B, K, T]``: see there)."""
    g = layer_gram(h, norms)[:, :, mask.to(torch.bool)].movedim(-1, 0)  # [N, K, K]: real tokens
    diag = torch.diagonal(g, dim1=-2, dim2=-1)  # [N, K]
    return relations(diag, g, diag.unsqueeze(-2), g.unsqueeze(-3))


def layer_masks(k: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer relation's valid entries: ``(pairs [K, K], angles [K, K, K])`` (other layers)."""
    off = ~torch.eye(k, dtype=torch.bool, device=device)  # [K, K]
    return off, off.unsqueeze(-1) & off.unsqueeze(-2)


def layer_relation_packed(
    hs: torch.Tensor,
    ht: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
    mask: torch.Tensor,
    norms: torch.Tensor | None = None,
) -> torch.Tensor:
    """The reference's layer-transforming relation (per token, across the K layers) on the real
    tokens only; ``ht`` is the teacher's states or its :func:`layer_side`, ``norms`` the
    student's squared norms ``[B, K, T]`` if known (:func:`layer_gram`)."""
    if isinstance(ht, torch.Tensor) and ht.requires_grad:  # both sides by autograd
        off, ang = layer_masks(hs.shape[1], hs.device)
        ds, as_ = layer_side(hs, mask, norms)
        dt, at = layer_side(ht, mask)
        return masked_mse(ds, dt, off) + masked_mse(as_, at, ang)
    if isinstance(ht, torch.Tensor):
        with torch.no_grad():
            ht = layer_side(ht, mask)
    g = layer_gram(hs, norms)[:, :, mask.to(torch.bool)]  # [K, K, N]
    return _StudentLayerLoss.apply(g, *ht)


class _StudentLayerLoss(torch.autograd.Function):
    """The layer relation's loss from the student's per-token layer Gram ``[K, K, N]`` and the
    teacher's ``(dist [N, K, K], angle [N, K, K, K])``, with the gradient written by hand.

    The tensors are small (``K`` is the number of matched layers): autograd's chain of some
    forty ops cost several times the arithmetic, and with the tokens innermost every op runs
    along ``N`` instead of along a dimension of size ``K``. The arithmetic is :func:`relations`'
    and :func:`masked_mse`'s on the same entries."""

    @staticmethod
    def forward(ctx, g, t_dist, t_angle):
        """The loss (the mean squared errors over the other layers' pairs and angles)."""
        k, _, n = g.shape
        off, ang = layer_masks(k, g.device)
        d = torch.diagonal(g, dim1=0, dim2=1).T  # [K, N]: the squared norms
        d_l, d_m = d.unsqueeze(1), d.unsqueeze(0)  # [K(l), 1, N], [1, K(m), N]
        sq = torch.sqrt((d_l + EPS) * (d_m + EPS))  # [K, K, N]
        dist = 1.0 - g / sq
        raw = (d_l - g) + (d_m - g)  # |h_m - h_l|^2
        a = raw.clamp_min(0.0) + EPS
        # num[l, m, o] = (G_mo - G_lm) - (G_lo - G_ll), the reference's grouping
        num = (g.unsqueeze(0) - g.unsqueeze(2)) - (g.unsqueeze(1) - d_l.unsqueeze(1))
        su = torch.sqrt(a.unsqueeze(2) * a.unsqueeze(1))  # [K, K, K, N]: sqrt(a_lm a_lo)
        angle = num / su
        zero = g.new_zeros(())
        t_d = t_dist.to(g.dtype).movedim(0, -1)
        t_a = t_angle.to(g.dtype).movedim(0, -1)
        e1 = torch.where(off.unsqueeze(-1), dist - t_d, zero)
        e2 = torch.where(ang.unsqueeze(-1), angle - t_a, zero)
        n1 = max(n * int(off.sum()), 1)
        n2 = max(n * int(ang.sum()), 1)
        ctx.save_for_backward(g, d, sq, raw, a, su, angle, e1, e2)
        ctx.counts = (n1, n2)
        return _sq(e1) / n1 + _sq(e2) / n2

    @staticmethod
    def backward(ctx, grad_out):
        """``dL/dg`` by the chain rule through the formulas of :meth:`forward`."""
        g, d, sq, raw, a, su, angle, e1, e2 = ctx.saved_tensors
        n1, n2 = ctx.counts
        g1 = e1 * (2.0 * grad_out / n1)  # dL/d dist  [K, K, N]
        g2 = e2 * (2.0 * grad_out / n2)  # dL/d angle [K, K, K, N]
        # angle = num / su, su = sqrt(a_lm a_lo): d/dnum = 1/su, d/da_lm = -angle / (2 a_lm)
        dnum = g2 / su
        q = g2 * angle
        da = -(q.sum(2) + q.sum(1)) / (2.0 * a)  # [K(l), K, N]
        draw = da * (raw >= 0).to(g.dtype)  # clamp_min(0)'s gradient
        # dist = 1 - g / sq, sq^2 = (d_l + EPS)(d_m + EPS)
        dp = 0.5 * g1 * g / (sq * sq * sq)
        # num = G_mo - G_lm - G_lo + G_ll; raw = d_l + d_m - 2 G_lm
        dg = -g1 / sq - 2.0 * draw + dnum.sum(0) - dnum.sum(2) - dnum.sum(1)
        dd = (
            (dp * (d.unsqueeze(0) + EPS)).sum(1)
            + (dp * (d.unsqueeze(1) + EPS)).sum(0)
            + draw.sum(1)
            + draw.sum(0)
            + dnum.sum((1, 2))
        )  # [K, N]
        torch.diagonal(dg, dim1=0, dim2=1).add_(dd.T)
        return dg, None, None


class TeacherRelations(NamedTuple):
    """The teacher's side of the CKD relations on a batch's ``N`` anchors (its real tokens, row
    after row): what :func:`ckd_loss_packed` compares the student's relations with.

    They depend on the teacher's states and the mask only, so in training they are constants of
    each example: :func:`teacher_relations` computes them once, :meth:`rows` splits them per
    example and :meth:`cat` joins examples back into a batch (``kdkit.plugins.methods.ckd``
    keeps them between epochs).
    """

    dist: torch.Tensor  # [K, 2W, N]
    diag: torch.Tensor  # [K, 2W, N] angle(a; j, j)
    upper: torch.Tensor  # [K, U, N]  angle(a; j, k), j < k
    layer_dist: torch.Tensor  # [N, K, K]
    layer_angle: torch.Tensor  # [N, K, K, K]

    @property
    def anchors(self) -> int:
        """``N``, the anchors the relations are for."""
        return self.layer_dist.shape[0]

    def rows(self, counts: list[int]) -> list[TeacherRelations]:
        """Split into consecutive examples of ``counts`` anchors each (views)."""
        word = [x.split(counts, dim=2) for x in (self.dist, self.diag, self.upper)]
        layer = [x.split(counts, dim=0) for x in (self.layer_dist, self.layer_angle)]
        return [TeacherRelations(*parts) for parts in zip(*word, *layer, strict=True)]

    @staticmethod
    def cat(parts: list[TeacherRelations], dtype: torch.dtype = torch.float32) -> TeacherRelations:
        """Join examples in order (anchors row after row), as ``dtype``."""
        dims = (2, 2, 2, 0, 0)
        return TeacherRelations(
            *(torch.cat([p[i] for p in parts], dim=d).to(dtype) for i, d in enumerate(dims))
        )

    def to(self, dtype: torch.dtype) -> TeacherRelations:
        """A copy in ``dtype`` (e.g. fp16 to keep, fp32 to compute with)."""
        return TeacherRelations(*(x.to(dtype) for x in self))


def teacher_relations(
    teacher: torch.Tensor,  # [B, K, T, Ht]
    mask: torch.Tensor,  # [B, T]
    *,
    window: int = 10,
    lists: WindowLists | None = None,
) -> TeacherRelations:
    """The teacher's relations of :func:`ckd_loss_packed` (no gradient); ``lists``: the mask's
    :func:`window_lists` when the caller has them (pair mask in the teacher's dtype)."""
    with torch.no_grad():
        ht = to_accumulation(teacher)
        k = ht.shape[1]
        if lists is None or lists.pair_valid.dtype != ht.dtype:
            lists = window_lists(mask, window, k, ht.dtype)
        side = side_relations(gram_entries(ht, lists, window), lists, window)
        pv = lists.pair_valid
        # entries of absent others are finite but unbounded: zeros instead, so the relations
        # keep in fp16 (every kept value is a cosine or 1 - cosine, |x| <= 2; upper is 0 there)
        dist, diag, upper = side.dist * pv, side.diag * pv, side.upper
        off, ang = layer_masks(k, ht.device)
        layer_dist, layer_angle = layer_side(ht, mask)
        zero = ht.new_zeros(())
        return TeacherRelations(
            dist,
            diag,
            upper,
            torch.where(off, layer_dist, zero),
            torch.where(ang, layer_angle, zero),
        )


def ckd_loss_packed(
    student: torch.Tensor,  # [B, K, T, Hs]
    teacher: torch.Tensor | TeacherRelations,  # [B, K, T, Ht], or its relations on mask
    mask: torch.Tensor,  # [B, T] (1 = real token)
    *,
    window: int = 10,
) -> CKDTerms:
    """:func:`kdkit.kernels.ckd.reference.ckd_loss_reference`, on the valid entries only.

    ``teacher`` may be the teacher's states or its :class:`TeacherRelations` on ``mask`` (the
    same loss and student gradient, without the teacher's half of the work)."""
    hs = to_accumulation(student)
    k = hs.shape[1]
    if isinstance(teacher, TeacherRelations):
        check_relations(student, teacher, mask, window)
    else:
        check_ckd_args(student, teacher, mask, window)
    lists = window_lists(mask, window, k, hs.dtype)
    if isinstance(teacher, TeacherRelations):
        side_t: TeacherRelations = teacher
    else:
        ht = to_accumulation(teacher)
        if ht.requires_grad:  # a teacher that needs gradients: plain autograd through both sides
            side_s = side_relations(gram_entries(hs, lists, window), lists, window)
            side_h = side_relations(gram_entries(ht, lists, window), lists, window)
            wr = _word_loss(side_s, side_h, lists, k)
            return CKDTerms(wr, layer_relation_packed(hs, ht, mask))
        side_t = teacher_relations(ht, mask, window=window, lists=lists)
    blocks = gram_blocks(hs, window)
    wr = _StudentWordLoss.apply(blocks.reshape(-1), side_t, lists, window)
    norms = block_norms(blocks, hs.shape)  # [B, K, T]: the G_aa
    layer_t = (side_t.layer_dist, side_t.layer_angle)
    return CKDTerms(wr, layer_relation_packed(hs, layer_t, mask, norms))


def check_relations(
    student: torch.Tensor, teacher: TeacherRelations, mask: torch.Tensor, window: int
) -> None:
    """Raise a :class:`KdkitError` when ``teacher`` is not the relations of ``mask``'s anchors."""
    b, k, t, _ = student.shape
    n = int(mask.to(torch.bool).sum())
    want = {"dist": (k, 2 * window, n), "upper": (k, window * (2 * window - 1), n)}
    got = {"dist": tuple(teacher.dist.shape), "upper": tuple(teacher.upper.shape)}
    if student.dim() != 4 or mask.shape != (b, t) or got != want or teacher.anchors != n:
        raise KdkitError(
            f"teacher relations {got} do not fit a student {tuple(student.shape)} with mask "
            f"{tuple(mask.shape)} ({n} real tokens) and window {window}: want {want}",
            where="ckd_loss(teacher=TeacherRelations)",
            fix="compute them with teacher_relations() on the same mask and window",
        )
