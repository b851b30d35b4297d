"""Tiled (flash-attention style) student-teacher InfoNCE in Triton.

``sim = s t^T / tau`` is never materialised. Forward: one program per block of student rows
keeps an online base-2 log-sum-exp over blocks of teacher rows and stores ``lse [B]`` (O(B)).
Backward recomputes the similarity tiles: one kernel accumulates ``P t`` for blocks of student
rows, another ``P^T s`` for blocks of teacher rows (only when the teacher needs a gradient), each
program owning its output rows (no atomics). Extra memory is O(B * d). L2-normalisation, the
diagonal term and the ``grad_output`` scaling are O(B * d) PyTorch ops around the kernels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from kdkit.kernels.dispatch import interpreting
from kdkit.kernels.infonce.reference import NORM_EPS

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453


@triton.jit
def _sim_tile(
    x_ptr,
    y_ptr,
    rows,
    cols,
    rmask,
    cmask,
    D,
    stride_x,
    stride_y,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BD: tl.constexpr,
    LOWP: tl.constexpr,
):
    """``x[rows] . y[cols]^T`` as a [BM, BN] fp32 tile, reduced over D in chunks of BD."""
    acc = tl.zeros([BM, BN], tl.float32)
    for d0 in range(0, D, BD):
        dd = d0 + tl.arange(0, BD)
        dm = dd < D
        a = tl.load(
            x_ptr + rows[:, None] * stride_x + dd[None, :],
            mask=rmask[:, None] & dm[None, :],
            other=0.0,
        )
        b = tl.load(
            y_ptr + cols[:, None] * stride_y + dd[None, :],
            mask=cmask[:, None] & dm[None, :],
            other=0.0,
        )
        a = a.to(tl.float32)
        b = b.to(tl.float32)
        if LOWP == 1:
            acc = tl.dot(a.to(tl.bfloat16), tl.trans(b.to(tl.bfloat16)), acc)
        elif LOWP == 2:
            acc = tl.dot(a.to(tl.float16), tl.trans(b.to(tl.float16)), acc)
        else:
            acc = tl.dot(a, tl.trans(b), acc, input_precision="ieee")
    return acc


@triton.jit
def _log1p(x):
    """``log(1 + x)`` accurate for small ``x`` (no libdevice): ``log(u) * x / (u - 1)``."""
    u = 1.0 + x
    return tl.where(u == 1.0, x, tl.log(u) * (x / (u - 1.0)))


@triton.jit
def _infonce_fwd_kernel(
    s_ptr,
    t_ptr,
    stats_ptr,
    loss_ptr,
    B,
    D,
    stride_s,
    stride_t,
    scale,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BD: tl.constexpr,
    LOWP: tl.constexpr,
):
    """Per student row i (a block of BM): ``loss_i = lse_j(x_ij / tau) - x_ii / tau``, x = s.t.

    Online over blocks of teacher rows with the *raw* running max ``m`` subtracted before the
    ``log2(e)/tau`` multiply. The diagonal ``x_ii`` comes from the same tile product, and the
    sum ``l_off`` of the off-diagonal terms is kept apart, so ``loss_i = log1p(l_off / e_ii)``
    with ``e_ii = exp2((x_ii - m) scale)`` never subtracts two nearly equal numbers (student ==
    teacher gives a tiny, accurate loss). stats_ptr [3, B]: m, log2(l), q = l_off / l
    (= 1 - P_ii, for the backward's diagonal)."""
    rows = tl.program_id(0) * BM + tl.arange(0, BM)
    rmask = rows < B
    m = tl.full([BM], float("-inf"), tl.float32)
    l_sum = tl.zeros([BM], tl.float32)
    l_off = tl.zeros([BM], tl.float32)
    diag = tl.zeros([BM], tl.float32)
    for n0 in range(0, B, BN):
        cols = n0 + tl.arange(0, BN)
        cmask = cols < B
        x = _sim_tile(
            s_ptr, t_ptr, rows, cols, rmask, cmask, D, stride_s, stride_t, BM, BN, BD, LOWP
        )
        x = tl.where(cmask[None, :], x, float("-inf"))
        on_diag = rows[:, None] == cols[None, :]
        m_new = tl.maximum(m, tl.max(x, 1))
        r = tl.where(m_new == m, 1.0, tl.exp2((m - m_new) * scale))
        e = tl.exp2((x - m_new[:, None]) * scale)
        l_sum = l_sum * r + tl.sum(e, 1)
        l_off = l_off * r + tl.sum(tl.where(on_diag, 0.0, e), 1)
        diag += tl.sum(tl.where(on_diag, x, 0.0), 1)
        m = m_new
    e_d = tl.exp2((diag - m) * scale)  # <= 1
    direct = ((m - diag) * scale + tl.log2(l_sum)) * 0.6931471805599453
    loss = tl.where(e_d > 1e-30, _log1p(l_off / tl.maximum(e_d, 1e-30)), direct)
    tl.store(stats_ptr + rows, m, mask=rmask)
    tl.store(stats_ptr + B + rows, tl.log2(l_sum), mask=rmask)
    tl.store(stats_ptr + 2 * B + rows, l_off / l_sum, mask=rmask)
    tl.store(loss_ptr + rows, loss, mask=rmask)


@triton.jit
def _infonce_bwd_kernel(
    x_ptr,
    y_ptr,
    stats_ptr,
    out_ptr,
    B,
    D,
    stride_x,
    stride_y,
    stride_o,
    scale,
    LSE_ON_OTHER: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BD: tl.constexpr,
    LOWP: tl.constexpr,
):
    """out[own] = sum_other (P - I)[own, other] y[other] with P recomputed tile by tile.

    Student side (``LSE_ON_OTHER=False``): x = s, y = t, P_ij = exp2((x_ij - m_i) scale - L_i).
    Teacher side (``LSE_ON_OTHER=True``): x = t, y = s, the row statistics are those of the
    other index. On the diagonal ``P - 1`` is taken as ``-q = -l_off / l`` (exact, no
    cancellation). Each program owns BM rows of ``out`` [B, D] (fp32, zeroed) and accumulates
    into them in place.
    """
    rows = tl.program_id(0) * BM + tl.arange(0, BM)
    rmask = rows < B
    if not LSE_ON_OTHER:
        m_own = tl.load(stats_ptr + rows, mask=rmask, other=0.0)
        lg_own = tl.load(stats_ptr + B + rows, mask=rmask, other=0.0)
        q_own = tl.load(stats_ptr + 2 * B + rows, mask=rmask, other=0.0)
    for n0 in range(0, B, BN):
        cols = n0 + tl.arange(0, BN)
        cmask = cols < B
        x = _sim_tile(
            x_ptr, y_ptr, rows, cols, rmask, cmask, D, stride_x, stride_y, BM, BN, BD, LOWP
        )
        on_diag = rows[:, None] == cols[None, :]
        if LSE_ON_OTHER:
            m_o = tl.load(stats_ptr + cols, mask=cmask, other=0.0)
            lg_o = tl.load(stats_ptr + B + cols, mask=cmask, other=0.0)
            q_o = tl.load(stats_ptr + 2 * B + cols, mask=cmask, other=0.0)
            p = tl.exp2((x - m_o[None, :]) * scale - lg_o[None, :])
            p = tl.where(on_diag, -q_o[None, :], p)
        else:
            p = tl.exp2((x - m_own[:, None]) * scale - lg_own[:, None])
            p = tl.where(on_diag, -q_own[:, None], p)
        p = tl.where(rmask[:, None] & cmask[None, :], p, 0.0)  # [BM, BN]
        for d0 in range(0, D, BD):
            dd = d0 + tl.arange(0, BD)
            dm = dd < D
            yv = tl.load(
                y_ptr + cols[:, None] * stride_y + dd[None, :],
                mask=cmask[:, None] & dm[None, :],
                other=0.0,
            )
            yv = yv.to(tl.float32)
            if LOWP == 1:
                contrib = tl.dot(p.to(tl.bfloat16), yv.to(tl.bfloat16))
            elif LOWP == 2:
                contrib = tl.dot(p.to(tl.float16), yv.to(tl.float16))
            else:
                contrib = tl.dot(p, yv, input_precision="ieee")
            o_ptrs = out_ptr + rows[:, None] * stride_o + dd[None, :]
            om = rmask[:, None] & dm[None, :]
            tl.store(o_ptrs, tl.load(o_ptrs, mask=om, other=0.0) + contrib, mask=om)


#: ``(BM, BN, BD, num_warps, num_stages)`` on a GPU by operand kind (0 = fp32 IEEE, 1/2 =
#: bf16/fp16 tensor cores); checked spill-free for sm_90 by ``kdkit bench --static``.
GPU_CONFIGS = {0: (32, 32, 32, 4, 2), 1: (128, 128, 64, 8, 3), 2: (128, 128, 64, 8, 3)}


def _config(d: int, lowp: int) -> tuple[int, int, int, int, int]:
    """``(BM, BN, BD, num_warps, num_stages)``: fixed configurations (the interpreter's tiny)."""
    if interpreting():
        return 16, 16, max(16, min(64, triton.next_power_of_2(d))), 1, 1
    return GPU_CONFIGS[lowp]


def _lowp(dtype: torch.dtype) -> int:
    """Tensor-core dtype for the tile products on a GPU (0 = fp32 IEEE). Never in the interpreter,
    whose bf16 dot is wrong."""
    if interpreting():
        return 0
    return {torch.bfloat16: 1, torch.float16: 2}.get(dtype, 0)


class _InfoNCECore(torch.autograd.Function):
    """``mean_i (lse_i - s_i . t_i / tau)`` for already normalised ``s``, ``t`` [B, d]."""

    @staticmethod
    def forward(ctx, s, t, temperature, lowp):
        s = s.contiguous()
        t = t.contiguous()
        b, d = s.shape
        bm, bn, bd, warps, stages = _config(d, lowp)
        stats = torch.empty(3, b, device=s.device, dtype=torch.float32)
        rows = torch.empty(b, device=s.device, dtype=torch.float32)
        scale = LOG2E / temperature
        _infonce_fwd_kernel[(triton.cdiv(b, bm),)](
            s,
            t,
            stats,
            rows,
            b,
            d,
            s.stride(0),
            t.stride(0),
            scale,
            BM=bm,
            BN=bn,
            BD=bd,
            LOWP=lowp,
            num_warps=warps,
            num_stages=stages,
        )
        ctx.save_for_backward(s, t, stats)
        ctx.temperature, ctx.lowp = temperature, lowp
        return rows.mean()

    @staticmethod
    def backward(ctx, grad_out):
        s, t, stats = ctx.saved_tensors
        b, d = s.shape
        bm, bn, bd, warps, stages = _config(d, ctx.lowp)
        scale = LOG2E / ctx.temperature
        coef = grad_out / (ctx.temperature * b)
        grid = (triton.cdiv(b, bm),)
        ds = dt = None
        if ctx.needs_input_grad[0]:
            acc = torch.zeros(b, d, device=s.device, dtype=torch.float32)
            _infonce_bwd_kernel[grid](
                s,
                t,
                stats,
                acc,
                b,
                d,
                s.stride(0),
                t.stride(0),
                acc.stride(0),
                scale,
                LSE_ON_OTHER=False,
                BM=bm,
                BN=bn,
                BD=bd,
                LOWP=ctx.lowp,
                num_warps=warps,
                num_stages=stages,
            )
            ds = (acc * coef).to(s.dtype)  # dL/ds_i = sum_j (P - I)_ij t_j / (tau B)
        if ctx.needs_input_grad[1]:
            acc = torch.zeros(b, d, device=s.device, dtype=torch.float32)
            _infonce_bwd_kernel[grid](
                t,
                s,
                stats,
                acc,
                b,
                d,
                t.stride(0),
                s.stride(0),
                acc.stride(0),
                scale,
                LSE_ON_OTHER=True,
                BM=bm,
                BN=bn,
                BD=bd,
                LOWP=ctx.lowp,
                num_warps=warps,
                num_stages=stages,
            )
            dt = (acc * coef).to(t.dtype)  # dL/dt_j = sum_i (P - I)_ij s_i / (tau B)
        return ds, dt, None, None


def infonce_loss_triton(
    student: torch.Tensor,  # [B, d]
    teacher: torch.Tensor,  # [B, d]
    *,
    temperature: float = 0.07,
    normalize: bool = True,
) -> torch.Tensor:
    """Triton ``infonce_loss`` (same contract as :func:`kdkit.kernels.infonce_loss`)."""
    lowp = _lowp(student.dtype)
    s, t = student, teacher
    if normalize:  # O(B d) fp32 copies; autograd takes the normalisation's gradient
        s = F.normalize(s.float(), dim=-1, eps=NORM_EPS)
        t = F.normalize(t.float(), dim=-1, eps=NORM_EPS)
    return _InfoNCECore.apply(s, t, float(temperature), lowp)
