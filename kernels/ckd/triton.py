"""CKD word relation in Triton: one program per (batch, layer, token) over its window's Gram tile.

Program ``(b, k, i)`` loads the ``2W+1`` window rows around token ``i`` (zero outside the
sequence or under padding), forms the window Gram tiles ``G = X X^T`` of student and teacher
(fp32 ``tl.dot`` with IEEE precision, in chunks of the width), turns them into distances and
angles (module :mod:`kdkit.kernels.ckd.reference` gives the formulas), accumulates the squared
student-teacher residuals, and — the loss being the last node — writes the student gradient in
the same pass: ``dG`` from the residuals, then ``dX = (dG + dG^T) X`` added to the window rows with
fp32 atomics. No ``[.., T, 2W+1, H]`` tensor exists; extra memory is one fp32 ``[B, K, T, Hs]``
gradient buffer. The layer-transforming relation (K x K Gram per token, O(B T K^3)) uses the
PyTorch Gram formulation of the reference in both paths.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kdkit.kernels.ckd.reference import EPS, CKDTerms, layer_relation_gram, window_valid
from kdkit.kernels.dispatch import interpreting

#: ``(BH, num_warps)`` on a GPU: spill-free for sm_90 with Triton 3.6 and 3.9 (``kdkit bench
#: --static``; BH = 64 with 4 warps spilled 12 bytes under Triton 3.6).
GPU_CONFIG = (32, 8)


@triton.jit
def _gram(x_ptr, base, rows, rvalid, H, BW: tl.constexpr, BH: tl.constexpr):
    """G = X X^T for the window rows (fp32 [BW, BW])."""
    g = tl.zeros([BW, BW], tl.float32)
    for h0 in range(0, H, BH):
        hh = h0 + tl.arange(0, BH)
        m = rvalid[:, None] & (hh < H)[None, :]
        x = tl.load(
            x_ptr + base + rows[:, None].to(tl.int64) * H + hh[None, :], mask=m, other=0.0
        ).to(tl.float32)
        g = tl.dot(x, tl.trans(x), g, input_precision="ieee")
    return g


@triton.jit
def _relations(g, ri, ci, C: tl.constexpr, eps):
    """(dist [BW], angle [BW, BW], g_aa, g_aj [BW], g_jj [BW], d [BW], d_raw [BW], q [BW], den [BW, BW])."""
    g_aj = tl.sum(tl.where(ri[:, None] == C, g, 0.0), 0)  # row C, indexed by column j
    g_jj = tl.sum(tl.where(ri[:, None] == ci[None, :], g, 0.0), 0)  # diagonal
    g_aa = tl.sum(tl.where(ci == C, g_aj, 0.0), 0)
    q = 1.0 / tl.sqrt((g_aa + eps) * (g_jj + eps))
    dist = 1.0 - g_aj * q
    d_raw = (g_aa - g_aj) + (g_jj - g_aj)
    d = tl.maximum(d_raw, 0.0)
    num = (g - g_aj[:, None]) - (g_aj[None, :] - g_aa)
    den = tl.sqrt((d[:, None] + eps) * (d[None, :] + eps))
    return dist, num / den, g_aa, g_aj, g_jj, d, d_raw, q, den


@triton.jit
def _ckd_word_kernel(
    s_ptr,  # [B, K, T, Hs] student hidden states (contiguous)
    t_ptr,  # [B, K, T, Ht] teacher
    m_ptr,  # [B, T] int32 mask
    inv_ptr,  # [2] fp32: 1 / n_distances, 1 / n_angles
    loss_ptr,  # [B * K * T] out: this program's share of the loss
    g_ptr,  # [B, K, T, Hs] fp32 out (zeroed): dloss/dstudent, by atomics
    K,
    T,
    Hs,
    Ht,
    eps,
    W: tl.constexpr,
    BW: tl.constexpr,
    BH: tl.constexpr,
    WRITE_GRAD: tl.constexpr,
):
    pid = tl.program_id(0)
    i = pid % T
    bk = pid // T
    b = bk // K
    ri = tl.arange(0, BW)
    ci = tl.arange(0, BW)
    rows = i - W + ri  # window token indices; the anchor sits at ri == W
    inside = (ri < 2 * W + 1) & (rows >= 0) & (rows < T)
    mrow = tl.load(m_ptr + b * T + rows, mask=inside, other=0)
    rvalid = inside & (mrow != 0)
    anchor_ok = tl.sum(tl.where(ri == W, rvalid.to(tl.int32), 0), 0) > 0
    pair = rvalid & (ri != W) & anchor_ok  # [BW] valid j
    ang_ok = pair[:, None] & pair[None, :]  # [BW, BW]
    inv_nd = tl.load(inv_ptr)
    inv_na = tl.load(inv_ptr + 1)

    gs = _gram(s_ptr, bk.to(tl.int64) * T * Hs, rows, rvalid, Hs, BW, BH)
    gt = _gram(t_ptr, bk.to(tl.int64) * T * Ht, rows, rvalid, Ht, BW, BH)
    ds, as_, g_aa, g_aj, g_jj, d, d_raw, q, den = _relations(gs, ri, ci, W, eps)
    dt, at, _, _, _, _, _, _, _ = _relations(gt, ri, ci, W, eps)
    rd = tl.where(pair, ds - dt, 0.0)  # [BW]
    ra = tl.where(ang_ok, as_ - at, 0.0)  # [BW, BW]
    loss = inv_nd * tl.sum(rd * rd, 0) + inv_na * tl.sum(tl.sum(ra * ra, 1), 0)
    tl.store(loss_ptr + pid, loss)

    if WRITE_GRAD:
        wd = 2.0 * inv_nd * rd  # dloss/d dist_j
        wa = 2.0 * inv_na * ra  # dloss/d angle_jk
        dnum = wa / den
        tw = wa * as_
        d_d = -0.5 * (tl.sum(tw, 1) + tl.sum(tw, 0)) / (d + eps)  # dloss/dD_j
        d_d = tl.where(d_raw >= 0.0, d_d, 0.0)
        # dloss/d g_aj, g_jj, g_aa (each a specific entry of the Gram tile)
        dg_aj = -(tl.sum(dnum, 1) + tl.sum(dnum, 0)) - 2.0 * d_d - wd * q
        dg_jj = d_d + wd * 0.5 * g_aj * q / (g_jj + eps)
        dg_aa = (
            tl.sum(tl.sum(dnum, 1), 0)
            + tl.sum(d_d, 0)
            + tl.sum(wd * 0.5 * g_aj * q, 0) / (g_aa + eps)
        )
        dg = dnum + tl.where(ri[:, None] == ci[None, :], dg_jj[None, :], 0.0)
        dg += tl.where(ri[:, None] == W, dg_aj[None, :], 0.0)
        dg += tl.where((ri[:, None] == W) & (ci[None, :] == W), dg_aa, 0.0)
        dsym = dg + tl.trans(dg)  # G = X X^T  =>  dX = (dG + dG^T) X
        base = bk.to(tl.int64) * T * Hs
        for h0 in range(0, Hs, BH):
            hh = h0 + tl.arange(0, BH)
            m = rvalid[:, None] & (hh < Hs)[None, :]
            offs = base + rows[:, None].to(tl.int64) * Hs + hh[None, :]
            x = tl.load(s_ptr + offs, mask=m, other=0.0).to(tl.float32)
            dx = tl.dot(dsym, x, input_precision="ieee")
            tl.atomic_add(g_ptr + offs, dx, mask=m)


def _counts(mask: torch.Tensor, window: int, k: int) -> torch.Tensor:
    """``[1/n_dist, 1/n_angle]`` of the word relation as a device tensor (no host sync)."""
    pair, _ = window_valid(mask, window)  # [B, T, J]; the [B, T, J, J] angle mask is a view
    cnt = pair.sum(-1).to(torch.float32)  # [B, T] valid partners per anchor
    n = torch.stack([cnt.sum(), (cnt * cnt).sum()]) * k
    return 1.0 / n.clamp_min(1.0)


class _WordRelation(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hs, ht, mask, window):
        b, k, t, h_s = hs.shape
        h_t = ht.shape[-1]
        hs_c, ht_c = hs.contiguous(), ht.contiguous()
        m = mask.to(torch.int32).contiguous()
        inv = _counts(mask, window, k)
        need = ctx.needs_input_grad[0]
        grad = (
            torch.zeros(hs.shape, device=hs.device, dtype=torch.float32)
            if need
            else hs.new_empty(1, dtype=torch.float32)
        )
        part = torch.empty(b * k * t, device=hs.device, dtype=torch.float32)
        bw = max(16, triton.next_power_of_2(2 * window + 1))
        bh, warps = (32, 1) if interpreting() else GPU_CONFIG
        _ckd_word_kernel[(b * k * t,)](
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
            EPS,
            W=window,
            BW=bw,
            BH=bh,
            WRITE_GRAD=need,
            num_warps=warps,
        )
        ctx.save_for_backward(grad)
        ctx.dtype = hs.dtype
        return part.sum()

    @staticmethod
    def backward(ctx, grad_out):
        (grad,) = ctx.saved_tensors
        return (grad * grad_out).to(ctx.dtype), None, None, None


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
