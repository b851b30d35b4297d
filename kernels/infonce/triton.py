"""Tiled (flash-attention style) student-teacher InfoNCE in Triton.

``sim = s t^T / tau`` is never materialised. Forward: one program per block of student rows
keeps an online base-2 log-sum-exp over blocks of teacher rows and stores ``lse [B]`` (O(B)).
Backward recomputes each similarity tile once: in chunks of student rows (``chunk_rows``) a
kernel writes ``dS = P - I`` (bf16/fp16 on the tensor-core path, else fp32) and both gradients
are GEMMs over the chunk, ``dS t`` and ``dS^T s``, accumulating in fp32 (no atomics). Forward +
backward: ``8 B^2 d`` FLOPs against the ``6 B^2 d`` floor. Extra memory is O(B * d) plus one
chunk of ``dS`` (at most ``CHUNK_ELEMS`` entries). L2-normalisation, the
diagonal term and the ``grad_output`` scaling are O(B * d) PyTorch ops around the kernels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from kdkit.kernels.dispatch import interpreting
from kdkit.kernels.infonce.reference import NORM_EPS
from kdkit.kernels.kd.fused_linear import gemm_f32

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
def _infonce_ds_kernel(
    s_ptr,
    t_ptr,
    stats_ptr,
    ds_ptr,
    B,
    D,
    row0,
    n_rows,
    stride_s,
    stride_t,
    stride_ds,
    scale,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BD: tl.constexpr,
    LOWP: tl.constexpr,
):
    """One ``[BM, BN]`` tile of ``dS = P - I`` for the student rows ``[row0, row0 + n_rows)``.

    The similarity tile is recomputed once (the forward's ``2 B^2 d`` again, the only recompute),
    ``P_ij = exp2((x_ij - m_i) scale - log2 l_i)`` from the forward's row statistics, the
    diagonal ``P_ii - 1`` taken as ``-q_i`` (exact, no cancellation), and the tile is stored in
    ``ds_ptr``'s dtype (bf16/fp16 for tensor-core GEMMs, else fp32) at row ``i - row0``. Both
    gradients then come from GEMMs over the chunk (``dS t`` and ``dS^T s``): no atomics, every
    program writes its own tile.
    """
    rows = row0 + tl.program_id(0) * BM + tl.arange(0, BM)
    rmask = (rows < row0 + n_rows) & (rows < B)
    cols = tl.program_id(1) * BN + tl.arange(0, BN)
    cmask = cols < B
    x = _sim_tile(s_ptr, t_ptr, rows, cols, rmask, cmask, D, stride_s, stride_t, BM, BN, BD, LOWP)
    m = tl.load(stats_ptr + rows, mask=rmask, other=0.0)
    lg = tl.load(stats_ptr + B + rows, mask=rmask, other=0.0)
    q = tl.load(stats_ptr + 2 * B + rows, mask=rmask, other=0.0)
    p = tl.exp2((x - m[:, None]) * scale - lg[:, None])
    p = tl.where(rows[:, None] == cols[None, :], -q[:, None], p)
    ok = rmask[:, None] & cmask[None, :]
    ptrs = ds_ptr + (rows - row0)[:, None].to(tl.int64) * stride_ds + cols[None, :]
    tl.store(ptrs, p.to(ds_ptr.dtype.element_ty), mask=ok)


#: ``(BM, BN, BD, num_warps, num_stages)`` on a GPU by operand kind (0 = fp32 IEEE, 1/2 =
#: bf16/fp16 tensor cores); checked spill-free for sm_90 by ``kdkit bench --static``.
GPU_CONFIGS = {0: (32, 32, 32, 4, 2), 1: (128, 128, 64, 8, 3), 2: (128, 128, 64, 8, 3)}
#: The most ``dS`` entries one backward chunk holds (32 MB in bf16, 64 MB in fp32).
CHUNK_ELEMS = 1 << 24


def chunk_rows(b: int, bm: int) -> int:
    """Student rows per backward chunk: ``min(CHUNK_ELEMS // B, B // 16)`` rounded down to a
    multiple of ``BM`` (at least ``BM``, at most ``B``) — the chunk is at most a sixteenth of the
    ``B x B`` matrix and at most ``CHUNK_ELEMS`` entries (B = 8192 and B = 32768: 512 rows, 8 MB
    and 32 MB in bf16), large enough that each chunk's GEMMs fill the GPU."""
    rows = min(CHUNK_ELEMS // b, b // 16)
    return min(max(bm, rows // bm * bm), b)


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
        # The tile products' operands: bf16/fp16 copies when the tensor cores run them (what the
        # kernels rounded to in registers before; the backward's GEMMs need them in memory).
        op_dtype = {1: torch.bfloat16, 2: torch.float16}.get(lowp, s.dtype)
        s_op = s.to(op_dtype).contiguous()
        t_op = t.to(op_dtype).contiguous()
        b, d = s.shape
        bm, bn, bd, warps, stages = _config(d, lowp)
        stats = torch.empty(3, b, device=s.device, dtype=torch.float32)
        rows = torch.empty(b, device=s.device, dtype=torch.float32)
        scale = LOG2E / temperature
        _infonce_fwd_kernel[(triton.cdiv(b, bm),)](
            s_op,
            t_op,
            stats,
            rows,
            b,
            d,
            s_op.stride(0),
            t_op.stride(0),
            scale,
            BM=bm,
            BN=bn,
            BD=bd,
            LOWP=lowp,
            num_warps=warps,
            num_stages=stages,
        )
        ctx.save_for_backward(s_op, t_op, stats)
        ctx.temperature, ctx.lowp = temperature, lowp
        ctx.dtypes = (s.dtype, t.dtype)
        return rows.mean()

    @staticmethod
    def backward(ctx, grad_out):
        s_op, t_op, stats = ctx.saved_tensors
        b, d = s_op.shape
        bm, bn, bd, warps, stages = _config(d, ctx.lowp)
        scale = LOG2E / ctx.temperature
        coef = grad_out / (ctx.temperature * b)
        need_s, need_t = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        ch = chunk_rows(b, bm)
        ds_buf = torch.empty(ch, b, device=s_op.device, dtype=s_op.dtype)  # dS, one chunk
        acc_s = torch.empty(b, d, device=s_op.device, dtype=torch.float32) if need_s else None
        acc_t = torch.zeros(b, d, device=s_op.device, dtype=torch.float32) if need_t else None
        for r0 in range(0, b, ch):
            n = min(ch, b - r0)
            _infonce_ds_kernel[(triton.cdiv(n, bm), triton.cdiv(b, bn))](
                s_op,
                t_op,
                stats,
                ds_buf,
                b,
                d,
                r0,
                n,
                s_op.stride(0),
                t_op.stride(0),
                ds_buf.stride(0),
                scale,
                BM=bm,
                BN=bn,
                BD=bd,
                LOWP=ctx.lowp,
                num_warps=warps,
                num_stages=stages,
            )
            dsc = ds_buf[:n]  # [n, B]
            if need_s:  # dL/ds_i = sum_j (P - I)_ij t_j / (tau B), rows of this chunk
                acc_s[r0 : r0 + n] = gemm_f32(dsc, t_op)
            if need_t:  # dL/dt_j = sum_i (P - I)_ij s_i / (tau B), this chunk's share
                acc_t += gemm_f32(dsc.t(), s_op[r0 : r0 + n])
        ds = (acc_s * coef).to(ctx.dtypes[0]) if need_s else None
        dt = (acc_t * coef).to(ctx.dtypes[1]) if need_t else None
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
