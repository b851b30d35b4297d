"""CKD word relation in Triton: tiles of anchors with halos, no atomics.

Program ``(b, k, tile)`` owns ``R = BT - 4W`` consecutive output token rows ``[r0, r0 + R)`` of one
``(batch, layer)`` and computes their whole loss share and gradient:

1. it loads the ``BT`` rows ``[r0 - 2W, r0 - 2W + BT)`` (the tile and a halo of ``2W`` rows on each
   side; zero outside the sequence or under padding) of student and teacher and forms the tile
   Gram matrices ``G = X X^T`` (``[BT, BT]`` fp32, ``tl.dot`` with IEEE precision, in chunks of the
   width) — once per tile, not once per anchor;
2. it walks the ``R + 2W`` anchors ``a`` in ``[r0 - W, r0 + R + W)`` — every anchor whose window
   reaches an owned row, i.e. the owned anchors and a halo of ``W`` on each side, whose
   contributions are **recomputed** here instead of being scattered by the neighbouring tile.
   Per anchor it takes the distances and angles of its window (``|j - a| <= W``, a mask over the
   tile's coordinates; :mod:`kdkit.kernels.ckd.reference` gives the formulas), the squared
   student-teacher residuals (added to the loss only for owned anchors, so each anchor counts
   once) and ``dL/dG`` (added to one ``[BT, BT]`` accumulator ``dG`` for every anchor);
3. ``dX = (dG + dG^T) X`` for the tile's rows (``G = X X^T``), of which the ``R`` owned rows are
   complete — every anchor that touches them was in the walk — and are stored with plain stores.

No ``[.., T, 2W+1, H]`` tensor exists, no atomics, and the result is deterministic (each gradient
row and each loss partial is written by one program; the partials are summed by ``torch.sum``).
The forward writes the fp32 gradient ``[B, K, T, Hs]`` once; backward multiplies it by
``grad_output`` (read on the device) in fp32 and rounds once to the student's dtype
(``_scale_cast_kernel``), so fp16 loss scaling neither overflows nor underflows. The
layer-transforming relation (K x K Gram per token, O(B T K^3)) uses the PyTorch Gram formulation
of the reference in both paths.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kdkit.kernels.ckd.reference import EPS, CKDTerms, layer_relation_gram, window_valid
from kdkit.kernels.dispatch import interpreting

#: ``(BH, num_warps, num_stages)`` per tile size ``BT`` on a GPU. ``kdkit bench --static`` checks
#: BT = 64 (W = 10) spill-free for sm_90; one stage, because with Triton's default 3 the
#: pipelined Gram loads pushed it to the 255-register cap and spilled 80 B in bf16. BT = 32
#: compiles without spills (128 registers, 4 warps); BT = 128 (W >= 16) spills 920 B at 16 warps.
GPU_CONFIGS = {32: (32, 4, 1), 64: (32, 8, 1), 128: (32, 16, 1)}
#: The largest window the kernel takes (``tile_rows`` has no tile for more).
MAX_WINDOW = 31
#: Elements per program of the backward's scale-and-round kernel.
SCALE_BLOCK = 4096


def tile_rows(window: int) -> int:
    """``BT``, the rows a program loads (its ``BT - 4W`` owned rows and a ``2W`` halo each side).

    32 or 64, the smaller that leaves at least 20 owned rows (at W = 10: BT = 64, 24 rows, 44
    anchors walked); 64 up to ``W = 15`` (4 owned rows); 128 for ``16 <= W <= 31`` (that tile
    spills registers on sm_90: correct, not fast).
    """
    if window > MAX_WINDOW:
        raise ValueError(f"window {window} > {MAX_WINDOW}")
    for bt in (32, 64):
        if bt - 4 * window >= 20:
            return bt
    return 64 if window <= 15 else 128


@triton.jit
def _tile_gram(x_ptr, base, rows, rvalid, H, BT: tl.constexpr, BH: tl.constexpr):
    """``G = X X^T`` for the tile's rows (fp32 ``[BT, BT]``; invalid rows are zero)."""
    g = tl.zeros([BT, BT], tl.float32)
    for h0 in range(0, H, BH):
        hh = h0 + tl.arange(0, BH)
        m = rvalid[:, None] & (hh < H)[None, :]
        x = tl.load(
            x_ptr + base + rows[:, None].to(tl.int64) * H + hh[None, :], mask=m, other=0.0
        ).to(tl.float32)
        g = tl.dot(x, tl.trans(x), g, input_precision="ieee")
    return g


@triton.jit
def _anchor_relations(g, g_jj, ri, ci, al, eps):
    """Relations of anchor ``al`` (a tile index) against every tile row, from the tile Gram ``g``.

    Returns ``(dist [BT], angle [BT, BT], g_aa, g_aj [BT], d_raw [BT], q [BT], iu [BT])`` with
    ``iu = 1 / sqrt(D + EPS)``: the angle's denominator ``sqrt((D_j + EPS)(D_k + EPS))`` is the
    outer product ``1 / (iu_j iu_k)``, so no ``[BT, BT]`` denominator is kept. The caller masks
    the results to the anchor's window.
    """
    g_aj = tl.sum(tl.where(ri[:, None] == al, g, 0.0), 0)  # row al, indexed by column j
    g_aa = tl.sum(tl.where(ci == al, g_aj, 0.0), 0)
    q = 1.0 / tl.sqrt((g_aa + eps) * (g_jj + eps))
    dist = 1.0 - g_aj * q
    d_raw = (g_aa - g_aj) + (g_jj - g_aj)
    iu = 1.0 / tl.sqrt(tl.maximum(d_raw, 0.0) + eps)
    num = (g - g_aj[:, None]) - (g_aj[None, :] - g_aa)
    return dist, num * iu[:, None] * iu[None, :], g_aa, g_aj, d_raw, q, iu


@triton.jit
def _ckd_tile_kernel(
    s_ptr,  # [B, K, T, Hs] student hidden states (contiguous)
    t_ptr,  # [B, K, T, Ht] teacher
    m_ptr,  # [B, T] int32 mask
    inv_ptr,  # [2] fp32: 1 / n_distances, 1 / n_angles
    loss_ptr,  # [B * K * n_tiles] out: this program's share of the loss
    g_ptr,  # [B, K, T, Hs] fp32 out: dloss/dstudent (each row written once, by its owner)
    K,
    T,
    Hs,
    Ht,
    n_tiles,
    eps,
    W: tl.constexpr,
    BT: tl.constexpr,
    BH: tl.constexpr,
    WRITE_GRAD: tl.constexpr,
):
    pid = tl.program_id(0)
    tile = pid % n_tiles
    bk = pid // n_tiles
    b = bk // K
    R: tl.constexpr = BT - 4 * W  # owned rows
    r0 = tile * R
    ri = tl.arange(0, BT)
    ci = tl.arange(0, BT)
    rows = r0 - 2 * W + ri  # token index of each tile row; owned rows are ri in [2W, 2W + R)
    inside = (rows >= 0) & (rows < T)
    mrow = tl.load(m_ptr + b * T + rows, mask=inside, other=0)
    rvalid = inside & (mrow != 0)
    inv_nd = tl.load(inv_ptr)
    inv_na = tl.load(inv_ptr + 1)
    s_base = bk.to(tl.int64) * T * Hs
    t_base = bk.to(tl.int64) * T * Ht

    gs = _tile_gram(s_ptr, s_base, rows, rvalid, Hs, BT, BH)
    gt = _tile_gram(t_ptr, t_base, rows, rvalid, Ht, BT, BH)
    on_diag = ri[:, None] == ci[None, :]
    gs_jj = tl.sum(tl.where(on_diag, gs, 0.0), 0)  # squared norms, by column
    gt_jj = tl.sum(tl.where(on_diag, gt, 0.0), 0)
    dg_acc = tl.zeros([BT, BT], tl.float32)  # dloss/dG, all anchors of the walk
    dg_diag = tl.zeros([BT], tl.float32)  # its diagonal part, kept apart (a vector)
    loss = 0.0
    # The anchors whose windows reach an owned row: tile indices [W, BT - W) (owned: [2W, 2W+R)).
    for al in range(W, BT - W):
        anchor_ok = tl.sum(tl.where(ri == al, rvalid.to(tl.int32), 0), 0) > 0
        if anchor_ok:
            near = (ci >= al - W) & (ci <= al + W) & (ci != al)
            pair = rvalid & near  # [BT] valid j in the window
            ang_ok = pair[:, None] & pair[None, :]  # [BT, BT]
            dt, at, _, _, _, _, _ = _anchor_relations(gt, gt_jj, ri, ci, al, eps)
            ds, as_, g_aa, g_aj, d_raw, q, iu = _anchor_relations(gs, gs_jj, ri, ci, al, eps)
            rd = tl.where(pair, ds - dt, 0.0)  # [BT]
            ra = tl.where(ang_ok, as_ - at, 0.0)  # [BT, BT]
            owned = (al >= 2 * W) & (al < 2 * W + R)
            part = inv_nd * tl.sum(rd * rd, 0) + inv_na * tl.sum(tl.sum(ra * ra, 1), 0)
            loss += tl.where(owned, part, 0.0)
            if WRITE_GRAD:
                wd = 2.0 * inv_nd * rd  # dloss/d dist_j
                wa = 2.0 * inv_na * ra  # dloss/d angle_jk
                dnum = wa * iu[:, None] * iu[None, :]  # dloss/d num_jk
                tw = wa * as_
                # dloss/dD_j (zero where the clamp D >= 0 is active)
                d_d = -0.5 * (tl.sum(tw, 1) + tl.sum(tw, 0)) * (iu * iu)
                d_d = tl.where(d_raw >= 0.0, d_d, 0.0)
                # dloss/d g_aj, g_jj, g_aa (each a specific entry of the tile Gram)
                dg_aj = -(tl.sum(dnum, 1) + tl.sum(dnum, 0)) - 2.0 * d_d - wd * q
                dg_aa = (
                    tl.sum(tl.sum(dnum, 1), 0)
                    + tl.sum(d_d, 0)
                    + tl.sum(wd * 0.5 * g_aj * q, 0) / (g_aa + eps)
                )
                dg_diag += d_d + wd * 0.5 * g_aj * q / (gs_jj + eps)
                row = dg_aj + tl.where(ci == al, dg_aa, 0.0)  # row al of dG
                dg_acc += dnum + tl.where(ri[:, None] == al, row[None, :], 0.0)
    tl.store(loss_ptr + pid, loss)

    if WRITE_GRAD:
        dg_acc += tl.where(on_diag, dg_diag[None, :], 0.0)
        dsym = dg_acc + tl.trans(dg_acc)  # G = X X^T  =>  dX = (dG + dG^T) X
        own = (ri >= 2 * W) & (ri < 2 * W + R) & inside
        for h0 in range(0, Hs, BH):
            hh = h0 + tl.arange(0, BH)
            hm = (hh < Hs)[None, :]
            offs = s_base + rows[:, None].to(tl.int64) * Hs + hh[None, :]
            x = tl.load(s_ptr + offs, mask=rvalid[:, None] & hm, other=0.0).to(tl.float32)
            dx = tl.dot(dsym, x, input_precision="ieee")
            tl.store(g_ptr + offs, dx, mask=own[:, None] & hm)


@triton.jit
def _scale_cast_kernel(g_ptr, go_ptr, out_ptr, n, BLOCK: tl.constexpr):
    """``out = (g * grad_output)`` rounded once to ``out``'s dtype (``g`` fp32, ``grad_output``
    a device scalar: no host sync)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    go = tl.load(go_ptr).to(tl.float32)
    g = tl.load(g_ptr + offs, mask=m, other=0.0)
    tl.store(out_ptr + offs, (g * go).to(out_ptr.dtype.element_ty), mask=m)


def _counts(mask: torch.Tensor, window: int, k: int) -> torch.Tensor:
    """``[1/n_dist, 1/n_angle]`` of the word relation as a device tensor (no host sync)."""
    pair, _ = window_valid(mask, window)  # [B, T, J]; the [B, T, J, J] angle mask is a view
    cnt = pair.sum(-1).to(torch.float32)  # [B, T] valid partners per anchor
    n = torch.stack([cnt.sum(), (cnt * cnt).sum()]) * k
    return 1.0 / n.clamp_min(1.0)


def launch_config(window: int) -> tuple[int, int, int, int]:
    """``(BT, BH, num_warps, num_stages)``: the GPU configuration, or the interpreter's."""
    bt = tile_rows(window)
    return (bt, 32, 1, 1) if interpreting() else (bt, *GPU_CONFIGS[bt])


class _WordRelation(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hs, ht, mask, window):
        b, k, t, h_s = hs.shape
        h_t = ht.shape[-1]
        hs_c, ht_c = hs.contiguous(), ht.contiguous()
        m = mask.to(torch.int32).contiguous()
        inv = _counts(mask, window, k)
        need = ctx.needs_input_grad[0]
        bt, bh, warps, stages = launch_config(window)
        n_tiles = triton.cdiv(t, bt - 4 * window)
        grad = (
            torch.empty(hs.shape, device=hs.device, dtype=torch.float32)
            if need
            else hs.new_empty(1, dtype=torch.float32)
        )
        part = torch.empty(b * k * n_tiles, device=hs.device, dtype=torch.float32)
        _ckd_tile_kernel[(b * k * n_tiles,)](
            hs_c,
            ht_c,
            m,
            inv,
            part,
            grad,
            k,
            t,
            h_s,
            h_t,
            n_tiles,
            EPS,
            W=window,
            BT=bt,
            BH=bh,
            WRITE_GRAD=need,
            num_warps=warps,
            num_stages=stages,
        )
        ctx.save_for_backward(grad)
        ctx.dtype = hs.dtype
        return part.sum()

    @staticmethod
    def backward(ctx, grad_out):
        (grad,) = ctx.saved_tensors
        out = torch.empty(grad.shape, device=grad.device, dtype=ctx.dtype)
        go = grad_out.reshape(1).to(torch.float32)
        n = grad.numel()
        _scale_cast_kernel[(triton.cdiv(n, SCALE_BLOCK),)](
            grad, go, out, n, BLOCK=SCALE_BLOCK, num_warps=1 if interpreting() else 8
        )
        return out, None, None, None


def ckd_loss_triton(
    student: torch.Tensor,  # [B, K, T, Hs]
    teacher: torch.Tensor,  # [B, K, T, Ht] (frozen)
    mask: torch.Tensor,  # [B, T]
    *,
    window: int = 10,
) -> CKDTerms:
    """Triton ``ckd_loss`` (word relation in Triton, layer relation via the K x K Gram in PyTorch)."""
    teacher = teacher.detach()
    wr = _WordRelation.apply(student, teacher, mask, int(window))
    ltr = layer_relation_gram(student.float(), teacher.float(), mask)
    return CKDTerms(wr, ltr)
