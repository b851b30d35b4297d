"""Fused sparse KD in Triton: one program per row (persistent grid), gradient written in forward.

Per row of the student logits ``z`` ([N, C]) and the teacher's top-k buckets (``k`` ids, their
log-probabilities at T, the tail's log-mass), the forward kernel ``_sparse_kd_fwd_kernel``:

1. sweep 1 (HBM): the raw row max ``m``;
2. sweep 2 (L2): ``S = sum_c e_c`` with ``e_c = exp2((z_c - m) log2(e) / T)``, accumulated in
   float64;
3. gathers the ``k`` student logits of the teacher's ids: ``S_K = sum_K e_i`` (float64, the same
   fp32 ``e_i`` as in sweep 2), the student tail ``R = S - S_K`` (float64: resolved to ~1e-16 S),
   the row's loss. When ``R < 2^-26 S`` and the teacher's tail ``q > 0``, the precise path
   (``_tail_lse``) sums the tail itself with its own max, testing each column against the ids;
4. sweep 3 (L2, reverse block order) writes ``dloss/dz_c = w/T (s_c - q s_c / r)`` for every c
   (the tail form), then, after a block barrier, overwrites the ``k`` top-k entries with
   ``w/T (s_i - p_i)`` (a scatter of ``k`` values).

``w`` is the row's weight (``T^2``, the mean's ``1/n``, 0 for ignored rows). The persistent grid
keeps the rows in flight within half the L2 (:func:`kdkit.kernels.kd.grid.persistent_programs`),
so sweeps 2 and 3 re-read from L2 and HBM sees: the student row read once, its gradient written
once, ``k`` ids and log-probabilities read (``traffic.py``). Loads and stores are 16-byte vectors
for any C, as in ``kd/triton.py`` (whose store and rounding helpers this module reuses).

Backward (``_sparse_kd_bwd_kernel``) reads ``grad_output`` on the device (a scalar, or one value
per row for ``reduction="none"``); rows where it is 1 are skipped. Otherwise fp32 gradients are
scaled in place and bf16/fp16 gradients are recomputed from the logits and the five per-row
statistics kept in forward (``m``, ``log2 S``, the tail's max and ``log2 R``, ``q``), multiplied
by ``grad_output`` in fp32 and rounded once, like ``kd_loss``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kdkit.kernels.dispatch import interpreting
from kdkit.kernels.kd.grid import persistent_programs
from kdkit.kernels.kd.triton import _round, _store_row_block, vector_width
from kdkit.kernels.sparse_kd.reference import (
    bad_input_flags,
    check_sparse_args,
    raise_for_flags,
    row_weights,
)
from kdkit.kernels.sparse_kd.topk import TopKTeacher, bucket_logprobs

LOG2E = 1.4426950408889634
#: Block (elements of a row per step) under the interpreter, and on a GPU with its warps/stages
#: (a fixed configuration: not autotuned, not yet measured on a GPU).
DEFAULT_BLOCK = 4096
GPU_CONFIG = (2048, 4, 2)
#: The most top-k entries a program holds at once (larger k is walked in chunks of this).
MAX_KBLOCK = 256


@triton.jit
def _topk_terms(
    s_row,  # student row (not aligned down)
    i_row,  # [k] ids
    lp_row,  # [k] teacher log p at T (fp32)
    K,
    C,
    mf,
    scale,
    zero,
    KBLOCK: tl.constexpr,
):
    """Over the top-k entries: ``(S_K fp64, sum p_i (log p_i - ln2 (z_i - m) scale), sum p_i)``."""
    s_k = zero.to(tl.float64)
    a_acc = zero
    p_acc = zero
    for ks in range(0, K, KBLOCK):
        kk = ks + tl.arange(0, KBLOCK)
        km = kk < K
        idx = tl.load(i_row + kk, mask=km, other=0)
        idx = tl.minimum(tl.maximum(idx, 0), C - 1)  # never out of bounds (checked on the host)
        zk = tl.load(s_row + idx, mask=km, other=0.0).to(tl.float32)
        zk = tl.where(km, zk, float("-inf"))
        ek = tl.exp2((zk - mf) * scale)
        s_k += tl.sum(ek.to(tl.float64), 0)
        lpk = tl.load(lp_row + kk, mask=km, other=float("-inf"))
        pk = tl.exp2(lpk * 1.4426950408889634)
        live = pk > 0.0  # a bucket the teacher gives no mass adds exactly 0
        a_acc += tl.sum(
            tl.where(live, pk * (lpk - 0.6931471805599453 * ((zk - mf) * scale)), 0.0), 0
        )
        p_acc += tl.sum(tl.where(live, pk, 0.0), 0)
    return s_k, a_acc, p_acc


@triton.jit
def _tail_lse(
    s_base,
    i_row,
    K,
    lead,
    end,
    lim,
    scale,
    zero,
    SUB: tl.constexpr,
    KSUB: tl.constexpr,
):
    """The precise path: ``(m_t, log2 sum_{c not in K} exp2((z_c - m_t) scale))`` over the
    student's tail, with its own max ``m_t``, testing each column against the ``k`` ids
    (``SUB x KSUB`` comparisons at a time). Taken only for rows whose tail ``S - S_K`` is too
    small a part of ``S`` to be resolved by the subtraction."""
    m_t = zero - float("inf")
    l_t = zero
    for start in range(0, lim, SUB):
        offs = start + tl.arange(0, SUB)
        ok = (offs >= lead) & (offs < end)
        z = tl.load(s_base + offs, mask=offs < lim, other=0.0).to(tl.float32)
        cols = offs - lead
        hits = tl.zeros([SUB], tl.int32)
        for ks in range(0, K, KSUB):
            kk = ks + tl.arange(0, KSUB)
            idx = tl.load(i_row + kk, mask=kk < K, other=-1)
            hits += tl.sum((cols[:, None] == idx[None, :]).to(tl.int32), 1)
        z = tl.where(ok & (hits == 0), z, float("-inf"))
        new_m = tl.maximum(m_t, tl.max(z, 0))
        m_f = tl.where(new_m == float("-inf"), 0.0, new_m)
        rs = tl.where(new_m == m_t, 1.0, tl.exp2((m_t - new_m) * scale))
        l_t = l_t * rs + tl.sum(tl.exp2((z - m_f) * scale), 0)
        m_t = new_m
    return m_t, tl.log2(l_t)


@triton.jit
def _write_grad_row(
    s_base,  # student row, aligned down to the vector
    g_base,  # gradient row, aligned down to the vector
    s_row,  # student row
    g_row,  # gradient row
    i_row,
    lp_row,
    K,
    C,
    mf,  # raw row max (finite)
    lg_s,  # log2 sum_c exp2((z_c - mf) scale)
    mt,  # the max the tail sum is taken relative to (finite)
    lg_r,  # log2 of the tail sum relative to mt
    qt,  # the teacher's tail mass q (0 when the student's tail is empty)
    factor,  # w / T (times grad_output in backward); 0 for ignored rows
    scale,
    lead,
    end,
    lim,
    BLOCK: tl.constexpr,
    KBLOCK: tl.constexpr,
    VEC: tl.constexpr,
):
    """Write ``factor * (s_c - q s_c / r)`` to the whole row (reverse block order), then, after a
    barrier, ``factor * (s_i - p_i)`` to the top-k entries."""
    lim_full = end // VEC * VEC
    nb = tl.cdiv(lim, BLOCK)
    for bi in range(0, nb):
        start = (nb - 1 - bi) * BLOCK  # reverse order: the most recent blocks are still cached
        offs = start + tl.arange(0, BLOCK)
        ok = (offs >= lead) & (offs < end)
        z = tl.load(s_base + offs, mask=offs < lim, other=0.0).to(tl.float32)
        s_c = tl.exp2((z - mf) * scale - lg_s)
        t_c = tl.exp2((z - mt) * scale - lg_r)  # s_c / r (inf/NaN only at top-k ids: rewritten)
        g = tl.where(factor != 0.0, factor * (s_c - qt * t_c), 0.0)
        _store_row_block(
            g_base, offs, _round(g, g_base), ok, lim_full, lead, start, end, BLOCK, VEC
        )
    # the top-k entries were written above with the tail form: make those stores visible to the
    # whole program before overwriting them (a CTA barrier orders its global memory accesses)
    tl.debug_barrier()
    for ks in range(0, K, KBLOCK):
        kk = ks + tl.arange(0, KBLOCK)
        km = kk < K
        idx = tl.load(i_row + kk, mask=km, other=0)
        idx = tl.minimum(tl.maximum(idx, 0), C - 1)
        zk = tl.load(s_row + idx, mask=km, other=0.0).to(tl.float32)
        s_k = tl.exp2((zk - mf) * scale - lg_s)
        lpk = tl.load(lp_row + kk, mask=km, other=float("-inf"))
        pk = tl.exp2(lpk * 1.4426950408889634)
        gk = tl.where(factor != 0.0, factor * (s_k - pk), 0.0)
        tl.store(g_row + idx, _round(gk, g_row), mask=km)


@triton.jit
def _sparse_kd_fwd_kernel(
    s_ptr,  # [N, C] student logits
    g_ptr,  # [N, C] out: dloss/dz (student dtype), same row stride (mod VEC) as s
    i_ptr,  # [N, K] int32 top-k ids (contiguous)
    lp_ptr,  # [N, K] fp32 teacher log p at T (contiguous)
    lq_ptr,  # [N] fp32 teacher log tail mass at T
    w_ptr,  # [N] fp32 row weight (T^2 / n_rows for the mean; 0 for ignored rows)
    loss_ptr,  # [N] fp32 out: weighted loss of each row
    stats_ptr,  # [5, N] fp32 out: m, log2 S, m_t, log2 R (relative to m_t), q (0: no tail)
    N,
    C,
    K,
    stride_s,
    stride_g,
    scale,  # log2(e) / T
    inv_t,  # 1 / T
    WRITE_GRAD: tl.constexpr,
    BLOCK: tl.constexpr,
    KBLOCK: tl.constexpr,
    VEC: tl.constexpr,
):
    pid = tl.program_id(0)
    zero = tl.sum(tl.zeros([BLOCK], tl.float32), 0)
    zero64 = pid.to(tl.int64) * 0  # int64 row index
    for row in range(pid, N, tl.num_programs(0)):
        r = zero64 + row
        lead = (r * stride_s) % VEC  # the row starts `lead` elements past a 16-byte boundary
        end = lead + C
        lim = tl.cdiv(end, VEC) * VEC
        s_base = s_ptr + tl.multiple_of(r * stride_s - lead, VEC)
        w = tl.load(w_ptr + r)
        # sweep 1: the raw row max
        m = zero - float("inf")
        for start in range(0, lim, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            ok = (offs >= lead) & (offs < end)
            z = tl.load(s_base + offs, mask=offs < lim, other=0.0).to(tl.float32)
            m = tl.maximum(m, tl.max(tl.where(ok, z, float("-inf")), 0))
        mf = tl.where(m == float("-inf"), 0.0, m)
        # sweep 2 (from L2): S in float64, so that S - S_K keeps the student's tail mass
        s_sum = zero.to(tl.float64)
        for start in range(0, lim, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            ok = (offs >= lead) & (offs < end)
            z = tl.load(s_base + offs, mask=offs < lim, other=0.0).to(tl.float32)
            e = tl.exp2((tl.where(ok, z, float("-inf")) - mf) * scale)
            s_sum += tl.sum(e.to(tl.float64), 0)
        s_row = s_ptr + r * stride_s
        i_row = i_ptr + r * K
        lp_row = lp_ptr + r * K
        s_k, a_acc, p_acc = _topk_terms(s_row, i_row, lp_row, K, C, mf, scale, zero, KBLOCK)
        tail64 = tl.maximum(s_sum - s_k, 0.0)  # R: the student's tail, relative to m
        lq = tl.load(lq_ptr + r)
        q = tl.exp2(lq * 1.4426950408889634)
        lg_s = tl.log2(s_sum.to(tl.float32))
        mt = mf
        lg_r = tl.log2(tail64.to(tl.float32))
        if (q > 0.0) & (w != 0.0) & (tail64 <= s_sum * 1.4901161193847656e-08):
            # R < 2^-26 S: the subtraction cannot resolve it; sum the tail itself
            mt, lg_r = _tail_lse(s_base, i_row, K, lead, end, lim, scale, zero, 128, 16)
            mt = tl.where(mt == float("-inf"), 0.0, mt)
        has_r = lg_r > float("-inf")
        top = a_acc + p_acc * (0.6931471805599453 * lg_s)  # sum p_i (log p_i - log s_i)
        # q (log q - log r), log r = ln2 ((m_t - m) scale + log2 R - log2 S); r = 0 < q: +inf
        tail = tl.where(
            q > 0.0, q * (lq - 0.6931471805599453 * ((mt - mf) * scale + lg_r - lg_s)), 0.0
        )
        tl.store(loss_ptr + r, tl.where(w != 0.0, w * (top + tail), 0.0))
        qt = tl.where(has_r, q, 0.0)
        lg_r = tl.where(has_r, lg_r, 0.0)
        tl.store(stats_ptr + r, mf)
        tl.store(stats_ptr + N + r, lg_s)
        tl.store(stats_ptr + 2 * N + r, mt)
        tl.store(stats_ptr + 3 * N + r, lg_r)
        tl.store(stats_ptr + 4 * N + r, qt)
        if WRITE_GRAD:
            g_base = g_ptr + tl.multiple_of(r * stride_g - lead, VEC)
            _write_grad_row(
                s_base,
                g_base,
                s_row,
                g_ptr + r * stride_g,
                i_row,
                lp_row,
                K,
                C,
                mf,
                lg_s,
                mt,
                lg_r,
                qt,
                w * inv_t,
                scale,
                lead,
                end,
                lim,
                BLOCK,
                KBLOCK,
                VEC,
            )


@triton.jit
def _sparse_kd_bwd_kernel(
    s_ptr,
    g_ptr,
    i_ptr,
    lp_ptr,
    w_ptr,
    stats_ptr,
    go_ptr,  # fp32 grad_output on the device: [1] (go_stride 0) or [N] (go_stride 1)
    N,
    C,
    K,
    stride_s,
    stride_g,
    go_stride,
    scale,
    inv_t,
    RECOMPUTE: tl.constexpr,
    BLOCK: tl.constexpr,
    KBLOCK: tl.constexpr,
    VEC: tl.constexpr,
):
    """``g *= grad_output`` (fp32 storage) or ``g = grad_output * dloss/dz`` recomputed (bf16 /
    fp16 storage), row by row; rows whose ``grad_output`` is 1 are left as they are."""
    zero64 = tl.program_id(0).to(tl.int64) * 0
    for row in range(tl.program_id(0), N, tl.num_programs(0)):
        r = zero64 + row
        go = tl.load(go_ptr + r * go_stride)
        if go != 1.0:
            lead = (r * stride_g) % VEC
            end = lead + C
            lim = tl.cdiv(end, VEC) * VEC
            g_base = g_ptr + tl.multiple_of(r * stride_g - lead, VEC)
            if RECOMPUTE:
                w = tl.load(w_ptr + r)
                _write_grad_row(
                    s_ptr + tl.multiple_of(r * stride_s - lead, VEC),
                    g_base,
                    s_ptr + r * stride_s,
                    g_ptr + r * stride_g,
                    i_ptr + r * K,
                    lp_ptr + r * K,
                    K,
                    C,
                    tl.load(stats_ptr + r),
                    tl.load(stats_ptr + N + r),
                    tl.load(stats_ptr + 2 * N + r),
                    tl.load(stats_ptr + 3 * N + r),
                    tl.load(stats_ptr + 4 * N + r),
                    go * w * inv_t,
                    scale,
                    lead,
                    end,
                    lim,
                    BLOCK,
                    KBLOCK,
                    VEC,
                )
            else:
                lim_full = end // VEC * VEC
                for start in range(0, lim, BLOCK):
                    offs = start + tl.arange(0, BLOCK)
                    ok = (offs >= lead) & (offs < end)
                    g = tl.load(g_base + offs, mask=offs < lim, other=0.0) * go
                    _store_row_block(g_base, offs, g, ok, lim_full, lead, start, end, BLOCK, VEC)


def kblock_for(k: int) -> int:
    """Top-k entries per chunk: the next power of two >= k, at most :data:`MAX_KBLOCK`."""
    return min(triton.next_power_of_2(max(1, k)), MAX_KBLOCK)


def _launch(kernel, grid, args, consts, block_size: int | None) -> None:
    if interpreting():
        kernel[grid](*args, **consts, BLOCK=block_size or DEFAULT_BLOCK, num_warps=1)
    elif block_size is not None:
        warps = 4 if block_size <= 2048 else (8 if block_size <= 4096 else 16)
        kernel[grid](*args, **consts, BLOCK=block_size, num_warps=warps)
    else:
        block, warps, stages = GPU_CONFIG
        kernel[grid](*args, **consts, BLOCK=block, num_warps=warps, num_stages=stages)


def grid_size(n: int, c: int, element_size: int, device: torch.device) -> int:
    """Programs of the persistent grid: rows in flight x (student row + gradient row) within
    half the L2 (one program per row off a GPU)."""
    if device.type != "cuda":
        return max(1, n)
    props = torch.cuda.get_device_properties(device)
    l2 = getattr(props, "L2_cache_size", 0) or (50 << 20)
    return persistent_programs(n, 2 * c * element_size, l2, props.multi_processor_count)


class _SparseKDLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, zs, idx, log_p, log_q, w, temperature, reduction, block_size):
        n, c = zs.shape
        k = idx.shape[1]
        zs = zs if zs.stride(-1) == 1 else zs.contiguous()
        write_grad = ctx.needs_input_grad[0]
        grad = torch.empty_like(zs) if write_grad else zs.new_empty(1, c)
        loss = torch.empty(n, device=zs.device, dtype=torch.float32)
        stats = torch.empty(5, n, device=zs.device, dtype=torch.float32)
        vec = vector_width(zs, grad) if write_grad else vector_width(zs)
        args = (
            zs,
            grad,
            idx,
            log_p,
            log_q,
            w,
            loss,
            stats,
            n,
            c,
            k,
            zs.stride(0),
            grad.stride(0) if write_grad else zs.stride(0),
            LOG2E / temperature,
            1.0 / temperature,
        )
        consts = dict(WRITE_GRAD=write_grad, KBLOCK=kblock_for(k), VEC=vec)
        g = grid_size(n, c, zs.element_size(), zs.device)
        _launch(_sparse_kd_fwd_kernel, (g,), args, consts, block_size)
        ctx.save_for_backward(zs, grad, idx, log_p, w, stats)
        ctx.cfg = (temperature, block_size)
        ctx.used = False
        return loss if reduction == "none" else loss.sum()

    @staticmethod
    def backward(ctx, grad_out):
        if ctx.used:
            raise RuntimeError(
                "sparse_kd_loss (Triton): backward twice through the same graph is not supported"
            )
        ctx.used = True
        zs, grad, idx, log_p, w, stats = ctx.saved_tensors
        temperature, block_size = ctx.cfg
        n, c = grad.shape
        go = grad_out.to(torch.float32).reshape(-1).contiguous()  # [1] or [N]
        recompute = grad.dtype != torch.float32
        vec = vector_width(zs, grad) if recompute else vector_width(grad)
        args = (
            zs,
            grad,
            idx,
            log_p,
            w,
            stats,
            go,
            n,
            c,
            idx.shape[1],
            zs.stride(0),
            grad.stride(0),
            0 if go.numel() == 1 else 1,
            LOG2E / temperature,
            1.0 / temperature,
        )
        consts = dict(RECOMPUTE=recompute, KBLOCK=kblock_for(idx.shape[1]), VEC=vec)
        g = grid_size(n, c, zs.element_size(), zs.device)
        _launch(_sparse_kd_bwd_kernel, (g,), args, consts, block_size)
        return grad, *([None] * 7)


def sparse_kd_loss_triton(
    student_logits: torch.Tensor,  # [N, C]
    topk: TopKTeacher,
    temperature: float = 1.0,
    labels: torch.Tensor | None = None,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
    t2_scaling: bool = True,
    block_size: int | None = None,
) -> torch.Tensor:
    """Triton ``sparse_kd_loss`` (same contract as :func:`kdkit.kernels.sparse_kd_loss`);
    ``block_size`` is for tests. Checks the ids and labels with one host read per call."""
    check_sparse_args(student_logits, topk, temperature, labels, reduction)
    n, c = student_logits.shape
    raise_for_flags(bad_input_flags(topk.indices, c, labels, ignore_index), c, ignore_index)
    log_p, log_q = bucket_logprobs(topk, temperature, dtype=torch.float32, num_classes=c)
    w = row_weights(
        n, labels, ignore_index, temperature, t2_scaling, reduction, student_logits.device
    )
    return _SparseKDLoss.apply(
        student_logits,
        topk.indices.to(torch.int32).contiguous(),
        log_p.detach().contiguous(),
        log_q.detach().contiguous(),
        w.contiguous(),
        float(temperature),
        reduction,
        block_size,
    )
