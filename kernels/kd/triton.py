"""Fused temperature-KD + hard-label CE in Triton: one program per row, gradient written in forward.

Per row, sweep 1 keeps online max/sum for ``softmax(z_s/T)``, ``softmax(z_t/T)`` and (for the
hard term) ``softmax(z_s)`` in base 2 (``log2(e)/T`` folded into one multiply before ``exp2``),
and accumulates the soft term; sweep 2 (blocks in reverse order, so the last ones are still in
L2) writes ``dloss/dz_s``. Backward only scales that gradient by ``grad_output``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kdkit.kernels.dispatch import interpreting
from kdkit.kernels.kd.reference import row_weights

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
#: Largest block of a row held at once (elements); bigger rows are swept in blocks.
MAX_BLOCK = 8192


@triton.jit
def _kd_row_kernel(
    s_ptr,  # [N, C] student logits
    t_ptr,  # [N, C] teacher logits
    g_ptr,  # [N, C] out: dloss/dz_s (student dtype)
    loss_ptr,  # [N] out: weighted per-row loss (fp32)
    ws_ptr,  # [N] weight of the soft term (alpha * T^2 / n_rows, 0 for masked rows)
    wh_ptr,  # [N] weight of the hard term ((1 - alpha) / n_labelled, 0 for unlabelled rows)
    y_ptr,  # [N] int64 labels (any valid class where wh == 0)
    C,
    stride_s,
    stride_t,
    stride_g,
    scale,  # log2(e) / T
    inv_t,  # 1 / T
    SOFT_KL: tl.constexpr,
    HAS_SOFT: tl.constexpr,
    HAS_HARD: tl.constexpr,
    WRITE_GRAD: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    s_row = s_ptr + row * stride_s
    t_row = t_ptr + row * stride_t
    ws = tl.load(ws_ptr + row)
    wh = tl.load(wh_ptr + row)
    zero = tl.sum(tl.zeros([BLOCK], tl.float32), 0)
    m_s = zero - float("inf")  # running max of z_s * scale
    l_s = zero  # running sum of exp2(a_s - m_s)
    m_t = zero - float("inf")
    l_t = zero
    acc = zero  # KL: sum e_t (a_t - a_s); CE: sum e_t (-a_s)   (rescaled with m_t)
    m_1 = zero - float("inf")  # hard term, temperature 1
    l_1 = zero
    for start in range(0, C, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        msk = offs < C
        zs = tl.load(s_row + offs, mask=msk, other=0.0).to(tl.float32)
        if HAS_SOFT:
            zt = tl.load(t_row + offs, mask=msk, other=0.0).to(tl.float32)
            a_s = tl.where(msk, zs * scale, float("-inf"))
            a_t = tl.where(msk, zt * scale, float("-inf"))
            new_ms = tl.maximum(m_s, tl.max(a_s, 0))
            l_s = l_s * tl.exp2(m_s - new_ms) + tl.sum(tl.exp2(a_s - new_ms), 0)
            m_s = new_ms
            new_mt = tl.maximum(m_t, tl.max(a_t, 0))
            r_t = tl.exp2(m_t - new_mt)
            e_t = tl.exp2(a_t - new_mt)
            if SOFT_KL:
                term = e_t * ((zt - zs) * scale)  # masked lanes: e_t = 0, zt = zs = 0
            else:
                term = -e_t * (zs * scale)
            acc = acc * r_t + tl.sum(tl.where(e_t > 0, term, 0.0), 0)
            l_t = l_t * r_t + tl.sum(e_t, 0)
            m_t = new_mt
        if HAS_HARD:
            b = tl.where(msk, zs * 1.4426950408889634, float("-inf"))
            new_m1 = tl.maximum(m_1, tl.max(b, 0))
            l_1 = l_1 * tl.exp2(m_1 - new_m1) + tl.sum(tl.exp2(b - new_m1), 0)
            m_1 = new_m1
    loss = zero
    lse_s = zero  # base-2 log-sum-exp of a_s
    lse_t = zero
    lse_1 = zero
    if HAS_SOFT:
        lse_s = m_s + tl.log2(l_s)
        lse_t = m_t + tl.log2(l_t)
        if SOFT_KL:
            soft = (acc / l_t - lse_t + lse_s) * 0.6931471805599453
        else:
            soft = (acc / l_t + lse_s) * 0.6931471805599453
        loss += ws * soft
    y = tl.load(y_ptr + row)
    if HAS_HARD:
        lse_1 = m_1 + tl.log2(l_1)
        z_y = tl.load(s_row + y).to(tl.float32)
        loss += wh * (lse_1 * 0.6931471805599453 - z_y)
    tl.store(loss_ptr + row, loss)
    if WRITE_GRAD:
        g_row = g_ptr + row * stride_g
        nb = tl.cdiv(C, BLOCK)
        for bi in range(0, nb):
            start = (nb - 1 - bi) * BLOCK  # reverse order: recent blocks are still cached
            offs = start + tl.arange(0, BLOCK)
            msk = offs < C
            zs = tl.load(s_row + offs, mask=msk, other=0.0).to(tl.float32)
            g = tl.zeros([BLOCK], tl.float32)
            if HAS_SOFT:
                zt = tl.load(t_row + offs, mask=msk, other=0.0).to(tl.float32)
                p_s = tl.exp2(zs * scale - lse_s)
                p_t = tl.exp2(zt * scale - lse_t)
                g += (ws * inv_t) * (p_s - p_t)
            if HAS_HARD:
                p_1 = tl.exp2(zs * 1.4426950408889634 - lse_1)
                g += wh * (p_1 - tl.where(offs == y, 1.0, 0.0))
            tl.store(g_row + offs, g.to(g_ptr.dtype.element_ty), mask=msk)


def launch_config(c: int, block_size: int | None = None) -> tuple[int, int]:
    """``(BLOCK, num_warps)`` for rows of ``c`` elements."""
    block = block_size or min(triton.next_power_of_2(c), MAX_BLOCK)
    if interpreting():
        return block, 1
    return block, 4 if block <= 2048 else (8 if block <= 4096 else 16)


def kd_rows(
    zs: torch.Tensor,  # [N, C]
    zt: torch.Tensor,  # [N, C]
    w_soft: torch.Tensor,  # [N] fp32
    w_hard: torch.Tensor,  # [N] fp32
    labels: torch.Tensor,  # [N] int64, valid class ids
    temperature: float,
    soft: str,
    has_soft: bool,
    has_hard: bool,
    write_grad: bool,
    block_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the row kernel: ``(weighted per-row loss [N] fp32, dloss/dz_s [N, C] or None)``."""
    n, c = zs.shape
    zs = zs if zs.stride(-1) == 1 else zs.contiguous()
    zt = zt if zt.stride(-1) == 1 else zt.contiguous()
    grad = torch.empty_like(zs) if write_grad else zs.new_empty(1)
    rows = torch.empty(n, device=zs.device, dtype=torch.float32)
    block, warps = launch_config(c, block_size)
    _kd_row_kernel[(n,)](
        zs, zt, grad, rows, w_soft, w_hard, labels,
        c, zs.stride(0), zt.stride(0), grad.stride(0) if write_grad else 0,
        LOG2E / temperature, 1.0 / temperature,
        SOFT_KL=soft == "kl", HAS_SOFT=has_soft, HAS_HARD=has_hard, WRITE_GRAD=write_grad,
        BLOCK=block, num_warps=warps,
    )  # fmt: skip
    return rows, (grad if write_grad else None)


class _KDLoss(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, zs, zt, w_soft, w_hard, labels, temperature, soft, has_soft, has_hard, block_size
    ):
        rows, grad = kd_rows(
            zs, zt, w_soft, w_hard, labels, temperature, soft, has_soft, has_hard,
            ctx.needs_input_grad[0], block_size,
        )  # fmt: skip
        ctx.save_for_backward(grad)
        ctx.used = False
        return rows.sum()

    @staticmethod
    def backward(ctx, grad_out):
        if ctx.used:
            raise RuntimeError(
                "kd_loss (Triton): backward twice through the same graph is not supported"
            )
        ctx.used = True
        (grad,) = ctx.saved_tensors
        grad.mul_(grad_out.to(grad.dtype))  # in place: the gradient was written in forward
        return grad, None, None, None, None, None, None, None, None, None


def kd_loss_triton(
    student_logits: torch.Tensor,  # [N, C]
    teacher_logits: torch.Tensor,  # [N, C]
    labels: torch.Tensor | None = None,
    *,
    temperature: float = 1.0,
    alpha: float = 1.0,
    soft: str = "kl",
    t2_scaling: bool = True,
    ignore_index: int = -100,
    row_mask: torch.Tensor | None = None,
    block_size: int | None = None,
) -> torch.Tensor:
    """Triton ``kd_loss`` (same contract as :func:`kdkit.kernels.kd_loss`); ``block_size`` is for tests."""
    n, _ = student_logits.shape
    w_soft, w_hard, safe = row_weights(
        n, labels, row_mask, alpha=alpha, temperature=temperature, t2_scaling=t2_scaling,
        ignore_index=ignore_index, device=student_logits.device,
    )  # fmt: skip
    return _KDLoss.apply(
        student_logits, teacher_logits.detach(), w_soft, w_hard, safe.contiguous(),
        float(temperature), soft, alpha != 0.0, alpha != 1.0, block_size,
    )  # fmt: skip
