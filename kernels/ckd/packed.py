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
  block, on one zero-padded copy of the states (:func:`gram_blocks`); G is symmetric, so an
  earlier other's entry ``G(a, a - d)`` is read as ``G(a - d, a)``. Not from
  ``4W+1`` shifted products (whose backward allocated and summed ``4W+1`` full-size
  gradients); one gather with precomputed, clamped indices picks every anchor's entries out.
* **a hand-written backward** for the student's word relation (:class:`_StudentWordLoss`): the
  gradient with respect to its Gram entries in a few passes over the ``[K, N, U]`` triangle
  instead of autograd's chain through every elementwise op.
* **the teacher's side once** (:func:`teacher_relations`, :class:`TeacherRelations`): it does not
  depend on the student, so a caller can compute it once per example and pass it instead of the
  teacher's states (``kdkit.plugins.methods.ckd`` keeps it between epochs).

Every relation is the reference's formula on the same Gram entries; only the Gram entries
(matmul instead of elementwise sums) and the order of the sums differ, so the losses and
gradients equal the reference's to fp32 rounding (``tests/kernels/test_ckd_packed.py``).
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
    ``U = W (2W - 1)`` pairs of others ``j < k``. ``index`` points every anchor's Gram entries,
    layer by layer, into the flattened blocks of :func:`gram_blocks`.
    """

    index: torch.Tensor  # [K, N, 1 + 2W + 2W + U] int64: G_aa, G_aj (2W), G_jj (2W), G_jk (U)
    pair_valid: torch.Tensor  # [N, 2W] 0/1 (float): the other token is real
    upper_valid: torch.Tensor  # [N, U] 0/1 (float): both others of the pair are real
    pick_j: torch.Tensor  # [2W, U] one-hot: x @ pick_j = x[..., j of each pair]
    pick_k: torch.Tensor  # [2W, U] one-hot: x @ pick_k = x[..., k of each pair]
    pick_jk: torch.Tensor  # [2W, U] pick_j + pick_k: x @ pick_jk = x[..., j] + x[..., k]


def _block(window: int) -> int:
    """Positions per block of :func:`gram_blocks`: the band half-width ``2W``."""
    return 2 * window


def gram_blocks(h: torch.Tensor, window: int) -> torch.Tensor:
    """``[B, K, T, H]`` -> ``[M, bt, 2 bt]`` (``bt = 2W``, ``M = B K ceil(T / bt)``): the Gram
    entries of every position with itself and the ``2 bt - 1`` positions after it.

    The ``(b, k)`` rows are padded with zeros to whole blocks of ``bt`` positions and laid end to
    end (position ``X`` of the whole layout; one zero block after the last), and
    ``out[m, q, p] = h_X . h_{X - q + p}`` with ``X = m bt + q``: block ``m`` against itself and
    its next block (:class:`_BlockProducts`). Every entry ``G(x, x + d)``, ``0 <= d <= 2W``, of
    a row is there; G is symmetric, so ``d < 0`` reads ``G(x + d, x)`` (see
    :func:`window_lists`). Past a row's end the entries read its zero padding or the next row:
    finite values that the masks drop.
    """
    b, k, t, hd = h.shape
    bt = _block(window)
    nb = -(-t // bt)
    m = b * k * nb
    rows = h.new_zeros(m * bt + bt, hd)  # [positions, H]: whole blocks and one zero block
    rows[: m * bt].view(b, k, nb * bt, hd)[:, :, :t] = h
    return _BlockProducts.apply(rows, m, bt)


class _BlockProducts(torch.autograd.Function):
    """``rows [M bt + bt, H]`` -> ``[M, bt, 2bt]``: each block of ``bt`` rows against itself and
    its next block, as one batched matmul against a copy of the ``2bt``-row windows (one product
    of twice the width runs faster on the CPU than two, and its backward takes two products
    instead of autograd's four)."""

    @staticmethod
    def forward(ctx, rows, m: int, bt: int):
        """The products; saves the blocks and the windows."""
        own = rows[: m * bt].view(m, bt, -1)  # [M, bt, H]
        win = torch.cat([own, rows[bt:].view(m, bt, -1)], dim=1)  # [M, 2bt, H]
        ctx.save_for_backward(own, win)
        ctx.m_bt = (m, bt)
        return torch.bmm(own, win.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad):
        """``dL/drows``: a block gets its own rows' and its windows' gradients."""
        own, win = ctx.saved_tensors
        m, bt = ctx.m_bt
        d_own = torch.bmm(grad, win)  # [M, bt, H]
        d_win = torch.bmm(grad.transpose(1, 2), own)  # [M, 2bt, H]
        d = own.new_zeros(m * bt + bt, own.shape[-1])
        d[: m * bt].view(m, bt, -1).copy_(d_own).add_(d_win[:, :bt])
        d[bt:].view(m, bt, -1).add_(d_win[:, bt:])
        return d, None, None


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
    layers = torch.arange(k, device=dev).view(k, 1)
    block = (ab * k + layers) * nb + torch.div(aa, bt, rounding_mode="floor")  # [K, N]
    index = table.index_select(0, aa % bt) + (block * per_block).unsqueeze(-1)  # [K, N, C]
    # others before the first row or after the last: clamped onto the first entry (a squared
    # norm) and the last (a zero of the padding block); masked like every other absent token
    index.clamp_(0, b * k * nb * per_block - 1)
    mp = F.pad(m, (w, w), value=False)
    pair_valid = mp[ab.unsqueeze(-1), (aa + w).unsqueeze(-1) + offs]  # [N, 2W]
    u = uj.numel()
    pick_j = torch.zeros(2 * w, u, dtype=dtype, device=dev)
    pick_j[uj, torch.arange(u, device=dev)] = 1.0
    pick_k = torch.zeros(2 * w, u, dtype=dtype, device=dev)
    pick_k[uk, torch.arange(u, device=dev)] = 1.0
    # float 0/1 masks: masking by a product is ~10x cheaper than torch.where on CPU, and every
    # masked entry is finite (see gram_blocks)
    pv = pair_valid.to(dtype)
    return WindowLists(
        index=index,
        pair_valid=pv,
        upper_valid=(pv @ pick_j) * (pv @ pick_k),
        pick_j=pick_j,
        pick_k=pick_k,
        pick_jk=pick_j + pick_k,
    )


def gather_entries(blocks: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``[K, n, C]`` Gram entries of ``index`` (:attr:`WindowLists.index` or a part of it) from the
    flattened :func:`gram_blocks`."""
    return blocks.index_select(0, index.reshape(-1)).view(index.shape)


def gram_entries(h: torch.Tensor, lists: WindowLists, window: int) -> torch.Tensor:
    """``[K, N, 1 + 4W + U]``: every anchor's ``G_aa, G_aj, G_jj, G_jk`` (differentiable in h)."""
    return gather_entries(gram_blocks(h, window).reshape(-1), lists.index)


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
    # num = (G_jk + G_aa) - (G_aj + G_ak): the reference's (G_jk - G_aj) - (G_ak - G_aa) to
    # rounding, with one pick (G_aj + G_ak, exact: the pickers' zeros add nothing); a zero-length
    # difference (h_j == h_a: G_jk == G_ak, G_aj == G_aa) still gives exactly 0
    num = (g_jk + g_aa) - g_aj @ lists.pick_jk
    su = torch.sqrt((dd @ pj) * (dd @ pk))
    return _Side(dist, diag, num / su, p, raw, dd, sd, su)


def _counts(lists: WindowLists, k: int) -> tuple[int, int]:
    """The reference's two counts: ``K x P`` distances and ``K x (P + 2Q)`` angles (``(j, k)``
    and ``(k, j)``), at least 1 each."""
    n_pair = int(lists.pair_valid.sum().item())
    n_dist = max(k * n_pair, 1)
    n_angle = max(k * (n_pair + 2 * int(lists.upper_valid.sum().item())), 1)
    return n_dist, n_angle


def _errors(s: _Side, t, lists: WindowLists):
    """Masked differences ``(dist, diag, upper)`` of one side's relations and the other's."""
    pv, uv = lists.pair_valid, lists.upper_valid
    return (s.dist - t.dist) * pv, (s.diag - t.diag) * pv, (s.upper - t.upper) * uv


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
        n_dist, n_angle = _counts(lists, lists.index.shape[0])
        g = gather_entries(blocks, lists.index)
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
        inc = lists.pick_jk.T  # [U, 2W]: the pair has that other as j or k
        dg = _entry_grad(g, s, e1, e2, e3, inc, window, grad_out / n_dist, grad_out / n_angle)
        grad = torch.zeros_like(blocks)
        grad.index_add_(0, lists.index.reshape(-1), dg.reshape(-1))
        return grad, None, None, None


def _sq(x: torch.Tensor) -> torch.Tensor:
    """``(x * x).sum()`` in one pass (a dot product of the flattened tensor with itself)."""
    flat = x.reshape(-1)
    return torch.dot(flat, flat)


def _entry_grad(g, s: _Side, e1, e2, e3, inc, window: int, per_dist, per_angle) -> torch.Tensor:
    """``dL/dg`` ``[K, N, C]`` of the Gram entries (``per_dist = dL/dloss / n_dist``,
    ``per_angle`` likewise)."""
    w2 = 2 * window
    g_aa, g_aj, g_jj, _ = g.split([1, w2, w2, g.shape[-1] - 1 - 2 * w2], dim=-1)
    g1 = e1 * (2.0 * per_dist)  # dL/d dist
    g2 = e2 * (2.0 * per_angle)  # dL/d diag
    g3 = e3 * (4.0 * per_angle)  # dL/d upper (counted twice)
    # upper = num / su, su = sqrt(dd_j dd_k): d/dnum = 1/su, d/ddd_j = -upper / (2 dd_j)
    gnum = g3 / s.su  # [K, n, U]
    gnum_o = gnum @ inc  # [K, n, 2W]: sum over the pairs of each other
    gup_o = (g3 * s.upper) @ inc
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
    d_aa = (gp * (g_jj + EPS) + gnd + graw).sum(-1, keepdim=True) + gnum.sum(-1, keepdim=True)
    return torch.cat([d_aa, d_aj, d_jj, gnum], dim=-1)


def layer_side(
    h: torch.Tensor, mask: torch.Tensor, norms: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One side's layer-transforming relations on the ``N`` real tokens of ``mask``: ``(dist
    [N, K, K], angle [N, K, K, K])``, the reference's formulas on the per-token ``K x K`` Gram
    matrices (by broadcasting instead of a batched matmul of ``N`` tiny matrices).

    ``norms`` ``[N, K]``: the tokens' squared norms per layer when the caller has them (the word
    relation's ``G_aa``); then only the ``K (K - 1) / 2`` cross-layer products are computed.
    """
    x = h.transpose(1, 2)[mask.to(torch.bool)]  # [N, K, H]: the real tokens only
    if norms is None:
        g = (x.unsqueeze(1) * x.unsqueeze(2)).sum(-1)  # [N, K, K]
    else:
        n, k = norms.shape
        iu, ju = torch.triu_indices(k, k, 1, device=h.device)  # [P] layer pairs l < m
        cross = (x[:, iu] * x[:, ju]).sum(-1)  # [N, P]
        flat = norms.new_zeros(n, k * k)
        flat = flat.index_copy(1, torch.arange(k, device=h.device) * (k + 1), norms)
        flat = flat.index_copy(1, iu * k + ju, cross).index_copy(1, ju * k + iu, cross)
        g = flat.view(n, k, k)
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
    student's squared norms ``[N, K]`` if known (:func:`layer_side`)."""
    off, ang = layer_masks(hs.shape[1], hs.device)
    ds, as_ = layer_side(hs, mask, norms)
    dt, at = layer_side(ht, mask) if isinstance(ht, torch.Tensor) else ht
    return masked_mse(ds, dt, off) + masked_mse(as_, at, ang)


class TeacherRelations(NamedTuple):
    """The teacher's side of the CKD relations on a batch's ``N`` anchors (its real tokens, row
    after row): what :func:`ckd_loss_packed` compares the student's relations with.

    They depend on the teacher's states and the mask only, so in training they are constants of
    each example: :func:`teacher_relations` computes them once, :meth:`rows` splits them per
    example and :meth:`cat` joins examples back into a batch (``kdkit.plugins.methods.ckd``
    keeps them between epochs).
    """

    dist: torch.Tensor  # [K, N, 2W]
    diag: torch.Tensor  # [K, N, 2W] angle(a; j, j)
    upper: torch.Tensor  # [K, N, U]  angle(a; j, k), j < k
    layer_dist: torch.Tensor  # [N, K, K]
    layer_angle: torch.Tensor  # [N, K, K, K]

    @property
    def anchors(self) -> int:
        """``N``, the anchors the relations are for."""
        return self.layer_dist.shape[0]

    def rows(self, counts: list[int]) -> list[TeacherRelations]:
        """Split into consecutive examples of ``counts`` anchors each (views)."""
        word = [x.split(counts, dim=1) for x in (self.dist, self.diag, self.upper)]
        layer = [x.split(counts, dim=0) for x in (self.layer_dist, self.layer_angle)]
        return [TeacherRelations(*parts) for parts in zip(*word, *layer, strict=True)]

    @staticmethod
    def cat(parts: list[TeacherRelations], dtype: torch.dtype = torch.float32) -> TeacherRelations:
        """Join examples in order (anchors row after row), as ``dtype``."""
        dims = (1, 1, 1, 0, 0)
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
    :func:`window_lists` when the caller has them (pickers in the teacher's dtype)."""
    with torch.no_grad():
        ht = to_accumulation(teacher)
        k = ht.shape[1]
        if lists is None or lists.pick_j.dtype != ht.dtype:
            lists = window_lists(mask, window, k, ht.dtype)
        side = side_relations(gram_entries(ht, lists, window), lists, window)
        pv, uv = lists.pair_valid, lists.upper_valid
        # entries of absent others are finite but unbounded: zeros instead, so the relations
        # keep in fp16 (every kept value is a cosine or 1 - cosine, |x| <= 2)
        dist, diag, upper = side.dist * pv, side.diag * pv, side.upper * uv
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
    blocks = gram_blocks(hs, window).reshape(-1)
    wr = _StudentWordLoss.apply(blocks, side_t, lists, window)
    norms = gather_entries(blocks, lists.index[..., 0]).transpose(0, 1)  # [N, K]: the G_aa
    layer_t = (side_t.layer_dist, side_t.layer_angle)
    return CKDTerms(wr, layer_relation_packed(hs, layer_t, mask, norms))


def check_relations(
    student: torch.Tensor, teacher: TeacherRelations, mask: torch.Tensor, window: int
) -> None:
    """Raise a :class:`KdkitError` when ``teacher`` is not the relations of ``mask``'s anchors."""
    b, k, t, _ = student.shape
    n = int(mask.to(torch.bool).sum())
    want = {"dist": (k, n, 2 * window), "upper": (k, n, window * (2 * window - 1))}
    got = {"dist": tuple(teacher.dist.shape), "upper": tuple(teacher.upper.shape)}
    if student.dim() != 4 or mask.shape != (b, t) or got != want or teacher.anchors != n:
        raise KdkitError(
            f"teacher relations {got} do not fit a student {tuple(student.shape)} with mask "
            f"{tuple(mask.shape)} ({n} real tokens) and window {window}: want {want}",
            where="ckd_loss(teacher=TeacherRelations)",
            fix="compute them with teacher_relations() on the same mask and window",
        )
