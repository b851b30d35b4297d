"""DIST in Triton: row statistics, column statistics and the gradient, without softmax tensors.

Kernels (``p = softmax(z / T)`` recomputed from the logits and per-row base-2 log-sum-exps):

1. ``_dist_rows``: per row, sweep 1 = online max/sum of both softmaxes; sweep 2 = the centred
   sums ``S_st, S_ss, S_tt`` of ``p - 1/C`` (row mean of a softmax is exactly ``1/C``).
2. ``_dist_cols``: per block of columns, one sweep: per-tile column means and centred sums
   merged with Chan's formula (no raw moments).
3. ``_dist_grad`` (backward): per row, ``g_p = u_i (p_t - 1/C) + v_i (p_s - 1/C) + U_c (p_t - mu_t)
   + V_c (p_s - mu_s)``, then the softmax backward ``g_z = p_s (g_p - sum_c p_s g_p) / T`` (two
   sweeps), scaled by ``grad_output`` read from device memory (no host sync).

The Pearson reductions and coefficients are O(N + C) PyTorch ops between the kernels.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kdkit.kernels.dispatch import interpreting
from kdkit.kernels.dist.reference import EPS

LOG2E = 1.4426950408889634
MAX_BLOCK = 4096


@triton.jit
def _dist_rows(s_ptr, t_ptr, lse_ptr, stats_ptr, N, C, stride_s, stride_t, scale, inv_c,
               BLOCK: tl.constexpr):
    """lse_ptr [4, N] (raw row max M_s, log2 sum L_s, M_t, L_t: p = exp2((z - M) scale - L));
    stats_ptr [3, N] (S_st, S_ss, S_tt)."""
    row = tl.program_id(0).to(tl.int64)
    s_row = s_ptr + row * stride_s
    t_row = t_ptr + row * stride_t
    zero = tl.sum(tl.zeros([BLOCK], tl.float32), 0)
    m_s = zero - float("inf")
    l_s = zero
    m_t = zero - float("inf")
    l_t = zero
    for start in range(0, C, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        msk = offs < C
        zs = tl.where(msk, tl.load(s_row + offs, mask=msk, other=0.0).to(tl.float32), float("-inf"))
        zt = tl.where(msk, tl.load(t_row + offs, mask=msk, other=0.0).to(tl.float32), float("-inf"))
        # raw running maxes: exp2((z - M) * scale), the max subtracted before the 1/T scaling
        n_s = tl.maximum(m_s, tl.max(zs, 0))
        l_s = l_s * tl.where(n_s == m_s, 1.0, tl.exp2((m_s - n_s) * scale)) + tl.sum(
            tl.exp2((zs - n_s) * scale), 0
        )
        m_s = n_s
        n_t = tl.maximum(m_t, tl.max(zt, 0))
        l_t = l_t * tl.where(n_t == m_t, 1.0, tl.exp2((m_t - n_t) * scale)) + tl.sum(
            tl.exp2((zt - n_t) * scale), 0
        )
        m_t = n_t
    lg_s = tl.log2(l_s)
    lg_t = tl.log2(l_t)
    s_st = zero
    s_ss = zero
    s_tt = zero
    nb = tl.cdiv(C, BLOCK)
    for bi in range(0, nb):
        offs = (nb - 1 - bi) * BLOCK + tl.arange(0, BLOCK)
        msk = offs < C
        zs = tl.load(s_row + offs, mask=msk, other=0.0).to(tl.float32)
        zt = tl.load(t_row + offs, mask=msk, other=0.0).to(tl.float32)
        a = tl.exp2((zs - m_s) * scale - lg_s) - inv_c
        b = tl.exp2((zt - m_t) * scale - lg_t) - inv_c
        a = tl.where(msk, a, 0.0)
        b = tl.where(msk, b, 0.0)
        s_st += tl.sum(a * b, 0)
        s_ss += tl.sum(a * a, 0)
        s_tt += tl.sum(b * b, 0)
    tl.store(lse_ptr + row, m_s)
    tl.store(lse_ptr + N + row, lg_s)
    tl.store(lse_ptr + 2 * N + row, m_t)
    tl.store(lse_ptr + 3 * N + row, lg_t)
    tl.store(stats_ptr + row, s_st)
    tl.store(stats_ptr + N + row, s_ss)
    tl.store(stats_ptr + 2 * N + row, s_tt)


@triton.jit
def _dist_cols(s_ptr, t_ptr, lse_ptr, stats_ptr, N, C, stride_s, stride_t, scale, inv_n,
               BR: tl.constexpr, BC: tl.constexpr):
    """stats_ptr [5, C]: mu_s, mu_t, S_st, S_ss, S_tt of the columns of p_s, p_t.

    One sweep over the column strip: each tile of BR rows gives its own column means and
    centred sums, merged into the running ones with Chan's formula (``M += M_b + d_s d_t n_a
    n_b / n``): as stable as the two-sweep centred sums (no raw moments), half the traffic."""
    cols = tl.program_id(0) * BC + tl.arange(0, BC)
    cmask = cols < C
    mu_s = tl.zeros([BC], tl.float32)
    mu_t = tl.zeros([BC], tl.float32)
    s_st = tl.zeros([BC], tl.float32)
    s_ss = tl.zeros([BC], tl.float32)
    s_tt = tl.zeros([BC], tl.float32)
    n_a = tl.sum(tl.zeros([BR], tl.float32), 0)  # rows merged so far
    for r0 in range(0, N, BR):
        rows = r0 + tl.arange(0, BR)
        rmask = rows < N
        m = rmask[:, None] & cmask[None, :]
        ms = tl.load(lse_ptr + rows, mask=rmask, other=0.0)
        ls = tl.load(lse_ptr + N + rows, mask=rmask, other=0.0)
        mt = tl.load(lse_ptr + 2 * N + rows, mask=rmask, other=0.0)
        lt = tl.load(lse_ptr + 3 * N + rows, mask=rmask, other=0.0)
        zs = tl.load(
            s_ptr + rows[:, None].to(tl.int64) * stride_s + cols[None, :], mask=m, other=0.0
        )
        zt = tl.load(
            t_ptr + rows[:, None].to(tl.int64) * stride_t + cols[None, :], mask=m, other=0.0
        )
        ps = tl.where(m, tl.exp2((zs.to(tl.float32) - ms[:, None]) * scale - ls[:, None]), 0.0)
        pt = tl.where(m, tl.exp2((zt.to(tl.float32) - mt[:, None]) * scale - lt[:, None]), 0.0)
        n_b = tl.sum(rmask.to(tl.float32), 0)
        mb_s = tl.sum(ps, 0) / n_b  # [BC] this tile's column means
        mb_t = tl.sum(pt, 0) / n_b
        a = tl.where(m, ps - mb_s[None, :], 0.0)
        b = tl.where(m, pt - mb_t[None, :], 0.0)
        n = n_a + n_b
        d_s = mb_s - mu_s
        d_t = mb_t - mu_t
        f = n_a * n_b / n
        s_st += tl.sum(a * b, 0) + d_s * d_t * f
        s_ss += tl.sum(a * a, 0) + d_s * d_s * f
        s_tt += tl.sum(b * b, 0) + d_t * d_t * f
        mu_s += d_s * (n_b / n)
        mu_t += d_t * (n_b / n)
        n_a = n
    tl.store(stats_ptr + cols, mu_s, mask=cmask)
    tl.store(stats_ptr + C + cols, mu_t, mask=cmask)
    tl.store(stats_ptr + 2 * C + cols, s_st, mask=cmask)
    tl.store(stats_ptr + 3 * C + cols, s_ss, mask=cmask)
    tl.store(stats_ptr + 4 * C + cols, s_tt, mask=cmask)


@triton.jit
def _dist_grad(s_ptr, t_ptr, g_ptr, lse_ptr, rowc_ptr, colc_ptr, go_ptr, N, C,
               stride_s, stride_t, stride_g, scale, inv_t, inv_c, BLOCK: tl.constexpr):
    """g[row] = grad_output * dloss/dz_s[row]; rowc_ptr [2, N] = (u, v); colc_ptr [4, C] = (U, V, mu_t, mu_s)."""
    row = tl.program_id(0).to(tl.int64)
    s_row = s_ptr + row * stride_s
    t_row = t_ptr + row * stride_t
    m_s = tl.load(lse_ptr + row)
    lg_s = tl.load(lse_ptr + N + row)
    m_t = tl.load(lse_ptr + 2 * N + row)
    lg_t = tl.load(lse_ptr + 3 * N + row)
    u = tl.load(rowc_ptr + row)
    v = tl.load(rowc_ptr + N + row)
    go = tl.load(go_ptr).to(tl.float32)
    dot = tl.sum(tl.zeros([BLOCK], tl.float32), 0)
    for start in range(0, C, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        msk = offs < C
        zs = tl.load(s_row + offs, mask=msk, other=0.0).to(tl.float32)
        zt = tl.load(t_row + offs, mask=msk, other=0.0).to(tl.float32)
        ps = tl.exp2((zs - m_s) * scale - lg_s)
        pt = tl.exp2((zt - m_t) * scale - lg_t)
        cu = tl.load(colc_ptr + offs, mask=msk, other=0.0)
        cv = tl.load(colc_ptr + C + offs, mask=msk, other=0.0)
        mt = tl.load(colc_ptr + 2 * C + offs, mask=msk, other=0.0)
        ms = tl.load(colc_ptr + 3 * C + offs, mask=msk, other=0.0)
        gp = u * (pt - inv_c) + v * (ps - inv_c) + cu * (pt - mt) + cv * (ps - ms)
        dot += tl.sum(tl.where(msk, ps * gp, 0.0), 0)
    nb = tl.cdiv(C, BLOCK)
    for bi in range(0, nb):
        offs = (nb - 1 - bi) * BLOCK + tl.arange(0, BLOCK)
        msk = offs < C
        zs = tl.load(s_row + offs, mask=msk, other=0.0).to(tl.float32)
        zt = tl.load(t_row + offs, mask=msk, other=0.0).to(tl.float32)
        ps = tl.exp2((zs - m_s) * scale - lg_s)
        pt = tl.exp2((zt - m_t) * scale - lg_t)
        cu = tl.load(colc_ptr + offs, mask=msk, other=0.0)
        cv = tl.load(colc_ptr + C + offs, mask=msk, other=0.0)
        mt = tl.load(colc_ptr + 2 * C + offs, mask=msk, other=0.0)
        ms = tl.load(colc_ptr + 3 * C + offs, mask=msk, other=0.0)
        gp = u * (pt - inv_c) + v * (ps - inv_c) + cu * (pt - mt) + cv * (ps - ms)
        g = (go * inv_t) * ps * (gp - dot)
        tl.store(g_ptr + row * stride_g + offs, g.to(g_ptr.dtype.element_ty), mask=msk)


def gpu_configs(c: int) -> tuple[int, int, int, int]:
    """``(BLOCK, BR, BC, num_warps)`` on a GPU, spill-free for sm_90 with Triton 3.6 and 3.9
    (``kdkit bench --static``; BR = 32 at BC = 32 spilled 16 bytes under Triton 3.6)."""
    block = min(triton.next_power_of_2(c), MAX_BLOCK)
    bc = min(triton.next_power_of_2(c), 128)
    br = 64 if bc <= 32 else 32
    return block, br, bc, 4 if block <= 2048 else 8


def _configs(n: int, c: int, block_size: int | None):
    if interpreting():
        return block_size or min(triton.next_power_of_2(c), MAX_BLOCK), 16, min(
            triton.next_power_of_2(c), 64
        ), 1
    block, br, bc, warps = gpu_configs(c)
    return block_size or block, br, bc, warps


def _pearson(s_ab, s_aa, s_bb):
    d = torch.sqrt(s_aa * s_bb + EPS * EPS)
    return s_ab / d, d


class _DIST(torch.autograd.Function):
    @staticmethod
    def forward(ctx, zs, zt, beta, gamma, temperature, block_size):
        zs = zs if zs.stride(-1) == 1 else zs.contiguous()
        zt = zt if zt.stride(-1) == 1 else zt.contiguous()
        n, c = zs.shape
        block, br, bc, warps = _configs(n, c, block_size)
        scale = LOG2E / temperature
        dev = zs.device
        lse = torch.empty(4, n, device=dev, dtype=torch.float32)
        rstats = torch.empty(3, n, device=dev, dtype=torch.float32)
        cstats = torch.empty(5, c, device=dev, dtype=torch.float32)
        _dist_rows[(n,)](
            zs,
            zt,
            lse,
            rstats,
            n,
            c,
            zs.stride(0),
            zt.stride(0),
            scale,
            1.0 / c,
            BLOCK=block,
            num_warps=warps,
        )
        _dist_cols[(triton.cdiv(c, bc),)](
            zs,
            zt,
            lse,
            cstats,
            n,
            c,
            zs.stride(0),
            zt.stride(0),
            scale,
            1.0 / n,
            BR=br,
            BC=bc,
            num_warps=warps,
        )
        rho_r, d_r = _pearson(rstats[0], rstats[1], rstats[2])  # [N]
        rho_c, d_c = _pearson(cstats[2], cstats[3], cstats[4])  # [C]
        loss = beta * (1.0 - rho_r.mean()) + gamma * (1.0 - rho_c.mean())
        # dloss/dp_s = u (p_t - 1/C) + v (p_s - 1/C) + U (p_t - mu_t) + V (p_s - mu_s)
        rowc = torch.stack([-beta / (n * d_r), beta * rstats[0] * rstats[2] / (n * d_r**3)])
        colc = torch.stack(
            [-gamma / (c * d_c), gamma * cstats[2] * cstats[4] / (c * d_c**3), cstats[1], cstats[0]]
        )
        ctx.save_for_backward(zs, zt, lse, rowc.contiguous(), colc.contiguous())
        ctx.cfg = (temperature, block, warps)
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        zs, zt, lse, rowc, colc = ctx.saved_tensors
        temperature, block, warps = ctx.cfg
        n, c = zs.shape
        g = torch.empty_like(zs)
        go = grad_out.reshape(1).to(torch.float32).contiguous()
        _dist_grad[(n,)](
            zs, zt, g, lse, rowc, colc, go, n, c, zs.stride(0), zt.stride(0), g.stride(0),
            LOG2E / temperature, 1.0 / temperature, 1.0 / c, BLOCK=block, num_warps=warps,
        )
        return g, None, None, None, None, None


def dist_loss_triton(
    student_logits: torch.Tensor,  # [N, C]
    teacher_logits: torch.Tensor,  # [N, C]
    *,
    beta: float = 1.0,
    gamma: float = 1.0,
    temperature: float = 1.0,
    block_size: int | None = None,
) -> torch.Tensor:
    """Triton ``dist_loss`` (same contract as :func:`kdkit.kernels.dist_loss`); ``block_size`` for tests."""
    return _DIST.apply(
        student_logits,
        teacher_logits.detach(),
        float(beta),
        float(gamma),
        float(temperature),
        block_size,
    )
