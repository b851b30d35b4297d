"""Fused temperature-KD + hard-label CE in Triton: gradient written in forward, 3 units of traffic.

Forward (``_kd_fwd_kernel``, a persistent grid: program ``p`` takes rows ``p, p + G, ...``): per
row, sweep 1 reads the student and teacher rows once from HBM and keeps, in base 2, online
max/sum for ``softmax(z_s/T)``, ``softmax(z_t/T)`` and (hard term) ``softmax(z_s)``, always
subtracting the running *raw* row max before the ``log2(e)/T`` multiply
(``exp2((z - M) * scale)``, never ``exp2(z * scale - lse)``), and accumulates the soft term.
Sweep 2 walks the row's blocks in reverse order (so the most recent are still in L2) and writes
``dloss/dz_s``. ``G`` is chosen so that the rows in flight fit in half the L2 cache
(:func:`grid_size`): the second sweep is then an L2 hit by construction at any C, and HBM sees
exactly: read ``z_s``, read ``z_t``, write the gradient (``traffic.py``).

Backward (``_kd_bwd_kernel``) reads ``grad_output`` on the device; when it is 1 every program
returns at once (no pass over the gradient, no host sync). Otherwise fp32 gradients are scaled
in place, and bf16/fp16 gradients are recomputed from the logits and the per-row statistics
saved in forward, multiplied by ``grad_output`` in fp32 and rounded once (so loss scaling of
65,536 neither overflows nor doubles the rounding error).

Loads are 16-byte vectors for any C: each row is read from the 16-byte boundary at or below its
start, with a mask at vector granularity (``offs < lim``, ``lim`` a multiple of the vector), and
the lanes outside the row are replaced by ``-inf`` after the load. Whole vectors of the gradient
are stored with that kind of mask; the partial vectors at the two ends of a row are stored
element by element, in the first and last block only.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from kdkit.errors import KdkitError
from kdkit.kernels.dispatch import interpreting
from kdkit.kernels.kd.grid import persistent_programs
from kdkit.kernels.kd.reference import label_error, row_weights

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
#: Block (elements of a row per step) under the interpreter and when not autotuning.
DEFAULT_BLOCK = 4096


@triton.jit
def _grad_block(
    zs,
    zt,
    cols,
    ms,
    mt,
    ls,
    lt,
    l1,
    ws,
    wh,
    y,
    scale,
    inv_t,
    factor,
    HAS_SOFT: tl.constexpr,
    HAS_HARD: tl.constexpr,
):
    """``factor * dloss/dz_s`` for one block of a row (fp32); ``ms``/``mt`` are finite maxes."""
    g = tl.zeros_like(zs)
    if HAS_SOFT:
        p_s = tl.exp2((zs - ms) * scale - ls)
        p_t = tl.exp2((zt - mt) * scale - lt)
        g += tl.where(ws != 0.0, (factor * ws * inv_t) * (p_s - p_t), 0.0)
    if HAS_HARD:
        p_1 = tl.exp2((zs - ms) * 1.4426950408889634 - l1)
        g += tl.where(wh != 0.0, (factor * wh) * (p_1 - tl.where(cols == y, 1.0, 0.0)), 0.0)
    return g


@triton.jit
def _round(g, g_ptr):
    """fp32 -> the gradient's dtype, rounded to nearest even. bf16 is rounded by hand (the
    interpreter's cast truncates; on a GPU this is the same RTNE as the hardware cast)."""
    if g_ptr.dtype.element_ty == tl.float32:
        return g
    elif g_ptr.dtype.element_ty == tl.bfloat16:
        bits = g.to(tl.uint32, bitcast=True)
        up = bits + 0x7FFF + ((bits >> 16) & 1)
        up = tl.where(g != g, bits, up)  # NaN stays NaN
        return (up >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        return g.to(g_ptr.dtype.element_ty)


@triton.jit
def _store_row_block(
    g_base, offs, g, ok, lim_full, lead, start, end, BLOCK: tl.constexpr, VEC: tl.constexpr
):
    """Store one block of a gradient row: whole vectors with a vector-granular mask, the partial
    vectors at the row's two ends element by element (only in the blocks that hold them)."""
    first_full = tl.where(lead == 0, 0, VEC)
    full = (offs < lim_full) & (offs >= first_full)
    tl.store(g_base + offs, g, mask=full)
    if (start < VEC) | (start + BLOCK > lim_full):
        tl.store(g_base + offs, g, mask=ok & ~full)


@triton.jit
def _kd_fwd_kernel(
    s_ptr,  # [N, C] student logits
    t_ptr,  # [N, C] teacher logits
    g_ptr,  # [N, C] out: dloss/dz_s (student dtype), same row stride (mod VEC) as s
    loss_ptr,  # [G] out: weighted loss of each program's rows (fp32)
    stats_ptr,  # [5, N] out: M_s, M_t (raw row maxes), L_s, L_t, L_1 (log2 of the sums)
    ws_ptr,  # [N] weight of the soft term (alpha * T^2 / n_rows, 0 for masked rows)
    wh_ptr,  # [N] weight of the hard term ((1 - alpha) / n_labelled, 0 for unlabelled rows)
    y_ptr,  # [N] int64 labels (any value where wh == 0)
    flag_ptr,  # [1] int32 out: set to 1 when a weighted row's label is outside [0, C)
    N,
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
    VEC: tl.constexpr,
):
    pid = tl.program_id(0)
    zero = tl.sum(tl.zeros([BLOCK], tl.float32), 0)
    zero64 = pid.to(tl.int64) * 0  # int64 row index (the loop variable is an int32 or an int)
    total = zero
    for row in range(pid, N, tl.num_programs(0)):
        r = zero64 + row
        lead = (r * stride_s) % VEC  # the row starts `lead` elements past a 16-byte boundary
        end = lead + C
        lim = tl.cdiv(end, VEC) * VEC
        s_base = s_ptr + tl.multiple_of(r * stride_s - lead, VEC)
        t_base = t_ptr + tl.multiple_of(r * stride_t - lead, VEC)
        ws = tl.load(ws_ptr + r)
        wh = tl.load(wh_ptr + r)
        m_s = zero - float("inf")  # raw running max of z_s
        l_s = zero  # sum exp2((z_s - m_s) * scale)
        l_1 = zero  # sum exp2((z_s - m_s) * log2(e))     (hard term, T = 1)
        m_t = zero - float("inf")
        l_t = zero
        d_acc = zero  # sum e_t (z_t - z_s)                  (rescaled with m_t)
        h_acc = zero  # sum e_t (z_t - m_t) <= 0             (soft CE only: the entropy)
        for start in range(0, lim, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            ok = (offs >= lead) & (offs < end)
            zs = tl.load(s_base + offs, mask=offs < lim, other=0.0).to(tl.float32)
            zs = tl.where(ok, zs, float("-inf"))
            new_ms = tl.maximum(m_s, tl.max(zs, 0))
            ms_f = tl.where(new_ms == float("-inf"), 0.0, new_ms)
            if HAS_SOFT:
                r_s = tl.where(new_ms == m_s, 1.0, tl.exp2((m_s - new_ms) * scale))
                l_s = l_s * r_s + tl.sum(tl.exp2((zs - ms_f) * scale), 0)
            if HAS_HARD:
                r_1 = tl.where(new_ms == m_s, 1.0, tl.exp2((m_s - new_ms) * 1.4426950408889634))
                l_1 = l_1 * r_1 + tl.sum(tl.exp2((zs - ms_f) * 1.4426950408889634), 0)
            m_s = new_ms
            if HAS_SOFT:
                zt = tl.load(t_base + offs, mask=offs < lim, other=0.0).to(tl.float32)
                zt = tl.where(ok, zt, float("-inf"))
                new_mt = tl.maximum(m_t, tl.max(zt, 0))
                mt_f = tl.where(new_mt == float("-inf"), 0.0, new_mt)
                r_t = tl.where(new_mt == m_t, 1.0, tl.exp2((m_t - new_mt) * scale))
                e_t = tl.exp2((zt - mt_f) * scale)
                live = e_t > 0.0  # -inf teacher entries (and lanes outside the row) add 0
                d_acc = d_acc * r_t + tl.sum(tl.where(live, e_t * (zt - zs), 0.0), 0)
                if not SOFT_KL:
                    shift = tl.where(l_t > 0.0, (m_t - mt_f) * l_t, 0.0)
                    h_acc = (h_acc + shift) * r_t + tl.sum(
                        tl.where(live, e_t * (zt - mt_f), 0.0), 0
                    )
                l_t = l_t * r_t + tl.sum(e_t, 0)
                m_t = new_mt
        ms_f = tl.where(m_s == float("-inf"), 0.0, m_s)
        mt_f = tl.where(m_t == float("-inf"), 0.0, m_t)
        lg_s = tl.log2(l_s)
        lg_t = tl.log2(l_t)
        lg_1 = tl.log2(l_1)
        loss = zero
        if HAS_SOFT:
            # KL_2 = scale (sum p_t (z_t - z_s) + m_s - m_t) + L_s - L_t ;  CE = KL + H(p_t)
            soft = scale * (d_acc / l_t + (ms_f - mt_f)) + (lg_s - lg_t)
            if not SOFT_KL:
                soft += lg_t - scale * (h_acc / l_t)
            loss += tl.where(ws != 0.0, ws * soft * 0.6931471805599453, 0.0)
        y = tl.load(y_ptr + r)
        if HAS_HARD:
            bad = (wh != 0.0) & ((y < 0) | (y >= C))
            tl.store(flag_ptr, 1, mask=bad)
            y = tl.where((y >= 0) & (y < C), y, 0)
            z_y = tl.load(s_ptr + r * stride_s + y).to(tl.float32)
            loss += tl.where(wh != 0.0, wh * ((ms_f - z_y) + lg_1 * 0.6931471805599453), 0.0)
        total += loss
        tl.store(stats_ptr + r, ms_f)
        tl.store(stats_ptr + N + r, mt_f)
        tl.store(stats_ptr + 2 * N + r, lg_s)
        tl.store(stats_ptr + 3 * N + r, lg_t)
        tl.store(stats_ptr + 4 * N + r, lg_1)
        if WRITE_GRAD:
            g_base = g_ptr + tl.multiple_of(r * stride_g - lead, VEC)
            lim_full = end // VEC * VEC
            nb = tl.cdiv(lim, BLOCK)
            for bi in range(0, nb):
                start = (nb - 1 - bi) * BLOCK  # reverse order: recent blocks are still cached
                offs = start + tl.arange(0, BLOCK)
                ok = (offs >= lead) & (offs < end)
                zs = tl.load(s_base + offs, mask=offs < lim, other=0.0).to(tl.float32)
                zt = zs
                if HAS_SOFT:
                    zt = tl.load(t_base + offs, mask=offs < lim, other=0.0).to(tl.float32)
                g = _grad_block(
                    zs,
                    zt,
                    offs - lead,
                    ms_f,
                    mt_f,
                    lg_s,
                    lg_t,
                    lg_1,
                    ws,
                    wh,
                    y,
                    scale,
                    inv_t,
                    1.0,
                    HAS_SOFT,
                    HAS_HARD,
                )
                _store_row_block(
                    g_base, offs, _round(g, g_ptr), ok, lim_full, lead, start, end, BLOCK, VEC
                )
    tl.store(loss_ptr + pid, total)


@triton.jit
def _kd_bwd_kernel(
    s_ptr,
    t_ptr,
    g_ptr,
    stats_ptr,
    ws_ptr,
    wh_ptr,
    y_ptr,
    go_ptr,  # [1] fp32 grad_output, read on the device
    N,
    C,
    stride_s,
    stride_t,
    stride_g,
    scale,
    inv_t,
    RECOMPUTE: tl.constexpr,
    HAS_SOFT: tl.constexpr,
    HAS_HARD: tl.constexpr,
    BLOCK: tl.constexpr,
    VEC: tl.constexpr,
):
    """``g *= grad_output`` (fp32 storage) or ``g = grad_output * dloss/dz_s`` recomputed
    (bf16/fp16 storage); nothing at all when ``grad_output == 1``."""
    go = tl.load(go_ptr)
    zero64 = tl.program_id(0).to(tl.int64) * 0
    if go != 1.0:
        for row in range(tl.program_id(0), N, tl.num_programs(0)):
            r = zero64 + row
            lead = (r * stride_g) % VEC
            end = lead + C
            lim = tl.cdiv(end, VEC) * VEC
            lim_full = end // VEC * VEC
            g_base = g_ptr + tl.multiple_of(r * stride_g - lead, VEC)
            if RECOMPUTE:
                s_base = s_ptr + tl.multiple_of(r * stride_s - lead, VEC)
                t_base = t_ptr + tl.multiple_of(r * stride_t - lead, VEC)
                ms = tl.load(stats_ptr + r)
                mt = tl.load(stats_ptr + N + r)
                ls = tl.load(stats_ptr + 2 * N + r)
                lt = tl.load(stats_ptr + 3 * N + r)
                l1 = tl.load(stats_ptr + 4 * N + r)
                ws = tl.load(ws_ptr + r)
                wh = tl.load(wh_ptr + r)
                y = tl.load(y_ptr + r)
                y = tl.where((y >= 0) & (y < C), y, 0)
            for start in range(0, lim, BLOCK):
                offs = start + tl.arange(0, BLOCK)
                ok = (offs >= lead) & (offs < end)
                if RECOMPUTE:
                    zs = tl.load(s_base + offs, mask=offs < lim, other=0.0).to(tl.float32)
                    zt = zs
                    if HAS_SOFT:
                        zt = tl.load(t_base + offs, mask=offs < lim, other=0.0).to(tl.float32)
                    g = _grad_block(
                        zs,
                        zt,
                        offs - lead,
                        ms,
                        mt,
                        ls,
                        lt,
                        l1,
                        ws,
                        wh,
                        y,
                        scale,
                        inv_t,
                        go,
                        HAS_SOFT,
                        HAS_HARD,
                    )
                else:
                    g = tl.load(g_base + offs, mask=offs < lim, other=0.0).to(tl.float32) * go
                _store_row_block(
                    g_base, offs, _round(g, g_ptr), ok, lim_full, lead, start, end, BLOCK, VEC
                )


#: Autotuning choices of the forward on a GPU (the interpreter uses ``DEFAULT_BLOCK`` and one
#: warp). The backward is not autotuned: it scales the gradient in place, which a tuning rerun
#: would repeat; it runs ``BWD_CONFIG``.
#: (8192, 16 warps) is not among them: 16 warps cap a thread at 128 registers and the forward
#: spilled 16 bytes there under Triton 3.6 (``kdkit bench --static``).
AUTOTUNE_CONFIGS = [
    (2048, 4, 2),
    (2048, 4, 3),
    (4096, 8, 2),
    (4096, 8, 3),
]


BWD_CONFIG = (4096, 8, 2)


@functools.cache
def _tuned_fwd():
    """The ``triton.autotune`` wrapper of the forward (GPU only: autotuning needs a driver).
    Its reruns are harmless: every output is stored, never accumulated."""
    configs = [
        triton.Config({"BLOCK": b}, num_warps=w, num_stages=s) for b, w, s in AUTOTUNE_CONFIGS
    ]
    return triton.autotune(configs=configs, key=["C", "VEC"])(_kd_fwd_kernel)


def _launch(kernel_name: str, grid, args, consts, block_size: int | None) -> None:
    kernel = {"fwd": _kd_fwd_kernel, "bwd": _kd_bwd_kernel}[kernel_name]
    if interpreting():
        kernel[grid](*args, **consts, BLOCK=block_size or DEFAULT_BLOCK, num_warps=1)
    elif block_size is not None:
        warps = 4 if block_size <= 2048 else (8 if block_size <= 4096 else 16)
        kernel[grid](*args, **consts, BLOCK=block_size, num_warps=warps)
    elif kernel_name == "fwd":
        _tuned_fwd()[grid](*args, **consts)
    else:
        block, warps, stages = BWD_CONFIG
        kernel[grid](*args, **consts, BLOCK=block, num_warps=warps, num_stages=stages)


def vector_width(*tensors: torch.Tensor) -> int:
    """Elements per 16-byte vector when every tensor allows it (aligned base, same row stride
    modulo the vector), else 1 (scalar accesses; still correct)."""
    vec = 16 // tensors[0].element_size()
    for t in tensors:
        if t.data_ptr() % 16 or t.stride(0) % vec != tensors[0].stride(0) % vec:
            return 1
    return vec


def grid_size(n: int, c: int, bytes_per_row: int, device: torch.device) -> int:
    """Programs of the persistent grid (:func:`kdkit.kernels.kd.grid.persistent_programs`):
    rows in flight x ``bytes_per_row`` within half the L2. One program per row off a GPU."""
    if device.type != "cuda":
        return max(1, n)
    props = torch.cuda.get_device_properties(device)
    l2 = getattr(props, "L2_cache_size", 0) or (50 << 20)
    return persistent_programs(n, bytes_per_row, l2, props.multi_processor_count)


def raise_if_bad_labels(flag: torch.Tensor, c: int, ignore_index: int, where: str) -> None:
    """Raise the out-of-range-label error when the kernel set ``flag`` (one read per call)."""
    if int(flag.item()):
        raise label_error(c, ignore_index, where)


def kd_rows(
    zs: torch.Tensor,  # [N, C]
    zt: torch.Tensor,  # [N, C]
    w_soft: torch.Tensor,  # [N] fp32
    w_hard: torch.Tensor,  # [N] fp32
    labels: torch.Tensor,  # [N] int64
    temperature: float,
    soft: str,
    has_soft: bool,
    has_hard: bool,
    write_grad: bool,
    block_size: int | None = None,
    flag: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Run the forward kernel: ``(per-program loss [G] fp32, dloss/dz_s [N, C] or None,
    row statistics [5, N])``. Out-of-range labels of weighted rows set ``flag`` ([1] int32)."""
    n, c = zs.shape
    zs = zs if zs.stride(-1) == 1 else zs.contiguous()
    zt = zt if zt.stride(-1) == 1 else zt.contiguous()
    grad = torch.empty_like(zs) if write_grad else zs.new_empty(1, c)
    stats = torch.empty(5, n, device=zs.device, dtype=torch.float32)
    if flag is None:
        flag = torch.zeros(1, device=zs.device, dtype=torch.int32)
    vec = vector_width(zs, zt, grad) if write_grad else vector_width(zs, zt)
    g = grid_size(n, c, c * (zs.element_size() + zt.element_size()), zs.device)
    partial = torch.empty(g, device=zs.device, dtype=torch.float32)
    args = (
        zs,
        zt,
        grad,
        partial,
        stats,
        w_soft,
        w_hard,
        labels,
        flag,
        n,
        c,
        zs.stride(0),
        zt.stride(0),
        grad.stride(0) if write_grad else zs.stride(0),
        LOG2E / temperature,
        1.0 / temperature,
    )
    consts = dict(
        SOFT_KL=soft == "kl", HAS_SOFT=has_soft, HAS_HARD=has_hard, WRITE_GRAD=write_grad, VEC=vec
    )
    _launch("fwd", (g,), args, consts, block_size)
    return partial, (grad if write_grad else None), stats


def kd_backward(
    zs,
    zt,
    grad,
    stats,
    w_soft,
    w_hard,
    labels,
    grad_out,
    temperature,
    has_soft,
    has_hard,
    block_size=None,
) -> torch.Tensor:
    """``grad_output * dloss/dz_s`` in ``grad`` (in place); a no-op kernel when it is 1."""
    n, c = grad.shape
    go = grad_out.reshape(1).to(torch.float32).contiguous()
    zs = zs if zs.stride(-1) == 1 else zs.contiguous()
    zt = zt if zt.stride(-1) == 1 else zt.contiguous()
    recompute = grad.dtype != torch.float32
    vec = vector_width(zs, zt, grad) if recompute else vector_width(grad)
    g = grid_size(n, c, c * (zs.element_size() + zt.element_size()), grad.device)
    args = (
        zs,
        zt,
        grad,
        stats,
        w_soft,
        w_hard,
        labels,
        go,
        n,
        c,
        zs.stride(0),
        zt.stride(0),
        grad.stride(0),
        LOG2E / temperature,
        1.0 / temperature,
    )
    consts = dict(RECOMPUTE=recompute, HAS_SOFT=has_soft, HAS_HARD=has_hard, VEC=vec)
    _launch("bwd", (g,), args, consts, block_size)
    return grad


class _KDLoss(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        zs,
        zt,
        w_soft,
        w_hard,
        labels,
        temperature,
        soft,
        has_soft,
        has_hard,
        block_size,
        ignore_index,
    ):
        flag = torch.zeros(1, device=zs.device, dtype=torch.int32)
        partial, grad, stats = kd_rows(
            zs,
            zt,
            w_soft,
            w_hard,
            labels,
            temperature,
            soft,
            has_soft,
            has_hard,
            ctx.needs_input_grad[0],
            block_size,
            flag,
        )
        if has_hard:
            raise_if_bad_labels(flag, zs.shape[1], ignore_index, "kd_loss(labels=...)")
        ctx.save_for_backward(zs, zt, grad, stats, w_soft, w_hard, labels)
        ctx.cfg = (temperature, has_soft, has_hard, block_size)
        ctx.used = False
        return partial.sum()

    @staticmethod
    def backward(ctx, grad_out):
        if ctx.used:
            raise RuntimeError(
                "kd_loss (Triton): backward twice through the same graph is not supported"
            )
        ctx.used = True
        zs, zt, grad, stats, w_soft, w_hard, labels = ctx.saved_tensors
        temperature, has_soft, has_hard, block_size = ctx.cfg
        kd_backward(
            zs,
            zt,
            grad,
            stats,
            w_soft,
            w_hard,
            labels,
            grad_out,
            temperature,
            has_soft,
            has_hard,
            block_size,
        )
        return grad, *([None] * 10)


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
    if alpha != 1.0 and labels is None:
        raise KdkitError(
            f"alpha={alpha} mixes in the hard-label term, which needs labels",
            where="kd_loss(labels=None)",
            fix="pass labels [N] (int64, ignore_index for unlabelled rows) or use alpha=1",
        )
    w_soft, w_hard, safe = row_weights(
        n,
        labels,
        row_mask,
        alpha=alpha,
        temperature=temperature,
        t2_scaling=t2_scaling,
        ignore_index=ignore_index,
        device=student_logits.device,
    )
    return _KDLoss.apply(
        student_logits,
        teacher_logits.detach(),
        w_soft,
        w_hard,
        safe.contiguous(),
        float(temperature),
        soft,
        alpha != 0.0,
        alpha != 1.0,
        block_size,
        ignore_index,
    )
