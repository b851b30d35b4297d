"""Linear heads + KD without the ``[N, C]`` logits: rows in chunks (for vocabulary-sized heads).

``fused_linear_kd`` computes exactly ``kd_loss(h_s W_s^T + b_s, h_t W_t^T + b_t, labels, ...)``.
The reference builds both ``[N, C]`` logit matrices; the chunked path walks over blocks of rows,
forms a ``[chunk, C]`` slice of each head's logits, gets the per-row loss and ``dloss/dz_s`` of the
slice (from the fused Triton row kernel on a GPU, from closed-form PyTorch maths otherwise), and
turns it straight into ``dh_s = dz W_s`` and ``dW_s += dz^T h_s`` (``db_s += sum dz``). Only one
chunk of logits exists at a time; the gradients are written in the forward pass and scaled by
``grad_output`` in backward. The teacher head never receives a gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdkit.kernels.kd.reference import (
    check_kd_args,
    check_labels_in_range,
    kd_loss_reference,
    row_weights,
)
from kdkit.kernels.numerics import shifted

#: Chunk rule when ``chunk_rows`` is not given: ``rows = clip(CHUNK_ELEMENTS // C, MIN_CHUNK_ROWS,
#: N)``, i.e. about 4 M logits (per head) per chunk and never fewer than 64 rows.
CHUNK_ELEMENTS = 1 << 22
MIN_CHUNK_ROWS = 64


def chunk_rows_for(n: int, c: int) -> int:
    """Rows per chunk by the rule above (``C = 128,256``: 64 rows; ``C = 32,000``: 131)."""
    return max(1, min(n, max(MIN_CHUNK_ROWS, CHUNK_ELEMENTS // max(c, 1))))


_MM_OUT_DTYPE: dict[str, bool] = {}


def gemm_f32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` accumulated in fp32 with an fp32 result. bf16/fp16 operands stay low precision
    (tensor-core GEMM, ``torch.mm(..., out_dtype=float32)``) on CUDA where PyTorch has it; else
    (CPU, older PyTorch) the operands are upcast."""
    if a.dtype in (torch.bfloat16, torch.float16) and a.is_cuda:
        if _MM_OUT_DTYPE.get("ok") is None:
            try:
                torch.mm(a[:1, :1], b[:1, :1], out_dtype=torch.float32)
                _MM_OUT_DTYPE["ok"] = True
            except (TypeError, RuntimeError, NotImplementedError):
                _MM_OUT_DTYPE["ok"] = False
        if _MM_OUT_DTYPE["ok"]:
            return torch.mm(a, b, out_dtype=torch.float32)
    return a.float() @ b.float()


def _logits(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    return F.linear(h, w, b)  # [n, C]


def fused_linear_kd_reference(
    student_hidden: torch.Tensor,  # [N, Hs]
    student_weight: torch.Tensor,  # [C, Hs]
    teacher_hidden: torch.Tensor,  # [N, Ht]
    teacher_weight: torch.Tensor,  # [C, Ht]
    labels: torch.Tensor | None = None,
    *,
    student_bias: torch.Tensor | None = None,
    teacher_bias: torch.Tensor | None = None,
    **kd_options,
) -> torch.Tensor:
    """The spec: materialise both logit matrices and call :func:`kd_loss_reference`."""
    with torch.no_grad():
        zt = _logits(teacher_hidden, teacher_weight, teacher_bias)
    zs = _logits(student_hidden, student_weight, student_bias)
    return kd_loss_reference(zs, zt, labels, **kd_options)


def _rows_torch(zs, zt, w_soft, w_hard, labels, temperature, soft, has_soft, has_hard, want_grad):
    """Per-row weighted loss [n] and dloss/dz_s [n, C] (fp32, or None), closed form, no autograd."""
    zs = zs.float()
    rows = torch.zeros(zs.shape[0], device=zs.device, dtype=torch.float32)
    grad = torch.zeros_like(zs) if want_grad else None
    if has_soft:
        log_ps = torch.log_softmax(shifted(zs) / temperature, -1)
        log_pt = torch.log_softmax(shifted(zt.float()) / temperature, -1)
        pt = log_pt.exp()
        live = pt > 0  # -inf teacher entries add exactly 0 (never 0 * inf)
        zero = torch.zeros_like(pt)
        term = pt * (log_pt - log_ps) if soft == "kl" else -pt * log_ps
        per = torch.where(live, term, zero).sum(-1)
        rows += torch.where(w_soft != 0, w_soft * per, torch.zeros_like(per))
        if want_grad:
            g = (w_soft / temperature)[:, None] * (log_ps.exp() - pt)
            grad += torch.where(w_soft[:, None] != 0, g, torch.zeros_like(g))
    if has_hard:
        log_p1 = torch.log_softmax(zs, -1)
        nll = -log_p1.gather(1, labels[:, None]).squeeze(1)
        rows += torch.where(w_hard != 0, w_hard * nll, torch.zeros_like(nll))
        if want_grad:
            p1 = log_p1.exp()
            p1[torch.arange(zs.shape[0], device=zs.device), labels] -= 1.0
            grad += torch.where(w_hard[:, None] != 0, w_hard[:, None] * p1, torch.zeros_like(p1))
    return rows, grad


class _FusedLinearKD(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        hs,
        ws,
        bs,
        ht,
        wt,
        bt,
        w_soft,
        w_hard,
        labels,
        temperature,
        soft,
        has_soft,
        has_hard,
        chunk,
        use_triton,
        ignore_index,
    ):
        n, c = hs.shape[0], ws.shape[0]
        need_h, need_w, need_b = (
            ctx.needs_input_grad[0],
            ctx.needs_input_grad[1],
            ctx.needs_input_grad[2],
        )
        # fp32 accumulators: grad_output scales them in backward before the one rounding
        g_h = torch.zeros(hs.shape, device=hs.device, dtype=torch.float32) if need_h else None
        g_w = torch.zeros(ws.shape, device=ws.device, dtype=torch.float32) if need_w else None
        g_b = (
            torch.zeros(c, device=ws.device, dtype=torch.float32)
            if need_b and bs is not None
            else None
        )
        loss = torch.zeros((), device=hs.device, dtype=torch.float32)
        want = g_h is not None or g_w is not None or g_b is not None
        flag = torch.zeros(1, device=hs.device, dtype=torch.int32)
        for start in range(0, n, chunk):
            sl = slice(start, min(n, start + chunk))
            zs = _logits(hs[sl], ws, bs)  # [chunk, C]
            zt = _logits(ht[sl], wt, bt)
            if use_triton:
                from kdkit.kernels.kd.triton import kd_rows

                rows, dz, _ = kd_rows(
                    zs,
                    zt,
                    w_soft[sl],
                    w_hard[sl],
                    labels[sl],
                    temperature,
                    soft,
                    has_soft,
                    has_hard,
                    want,
                    flag=flag,
                )
            else:
                rows, dz = _rows_torch(
                    zs,
                    zt,
                    w_soft[sl],
                    w_hard[sl],
                    labels[sl],
                    temperature,
                    soft,
                    has_soft,
                    has_hard,
                    want,
                )
            loss += rows.sum()
            if g_h is not None:
                g_h[sl] = gemm_f32(dz.to(ws.dtype), ws)  # [chunk, Hs]
            if g_w is not None:
                g_w += gemm_f32(dz.to(hs.dtype).T, hs[sl])  # [C, Hs]
            if g_b is not None:
                g_b += dz.float().sum(0)
        if use_triton and has_hard:
            from kdkit.kernels.kd.triton import raise_if_bad_labels

            raise_if_bad_labels(flag, c, ignore_index, "fused_linear_kd(labels=...)")
        ctx.save_for_backward(g_h, g_w, g_b)
        ctx.dtypes = (hs.dtype, ws.dtype, bs.dtype if bs is not None else None)
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        g_h, g_w, g_b = ctx.saved_tensors
        h_dtype, w_dtype, b_dtype = ctx.dtypes
        out_h = (g_h * grad_out).to(h_dtype) if g_h is not None else None
        out_w = (g_w * grad_out).to(w_dtype) if g_w is not None else None
        out_b = (g_b * grad_out).to(b_dtype) if g_b is not None else None
        return out_h, out_w, out_b, *([None] * 13)


def fused_linear_kd_chunked(
    student_hidden: torch.Tensor,
    student_weight: torch.Tensor,
    teacher_hidden: torch.Tensor,
    teacher_weight: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    student_bias: torch.Tensor | None = None,
    teacher_bias: torch.Tensor | None = None,
    temperature: float = 1.0,
    alpha: float = 1.0,
    soft: str = "kl",
    t2_scaling: bool = True,
    ignore_index: int = -100,
    row_mask: torch.Tensor | None = None,
    chunk_rows: int | None = None,
    use_triton: bool = False,
) -> torch.Tensor:
    """Chunked ``fused_linear_kd`` (``use_triton`` selects the Triton row kernel for each chunk)."""
    n, c = student_hidden.shape[0], student_weight.shape[0]
    # the checks of kd_loss on a meta stand-in for the logits (labels=None with alpha < 1 too)
    meta = torch.empty(n, c, device="meta")
    check_kd_args(meta, meta, labels, alpha, soft, temperature)
    if alpha != 1.0 and not use_triton:
        check_labels_in_range(labels, c, ignore_index, row_mask, "fused_linear_kd(labels=...)")
    w_soft, w_hard, safe = row_weights(
        n,
        labels,
        row_mask,
        alpha=alpha,
        temperature=temperature,
        t2_scaling=t2_scaling,
        ignore_index=ignore_index,
        device=student_hidden.device,
    )
    chunk = chunk_rows or chunk_rows_for(n, c)
    return _FusedLinearKD.apply(
        student_hidden,
        student_weight,
        student_bias,
        teacher_hidden.detach(),
        teacher_weight.detach(),
        teacher_bias.detach() if teacher_bias is not None else None,
        w_soft,
        w_hard,
        safe.contiguous(),
        float(temperature),
        soft,
        alpha != 0.0,
        alpha != 1.0,
        int(chunk),
        use_triton,
        ignore_index,
    )
