"""Temperature KD + hard-label cross-entropy: the PyTorch reference (the spec, the CPU path)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdkit.errors import KdkitError
from kdkit.kernels.numerics import shifted

SOFT_KINDS = ("kl", "ce")


def row_weights(
    n: int,
    labels: torch.Tensor | None,
    row_mask: torch.Tensor | None,
    *,
    alpha: float,
    temperature: float,
    t2_scaling: bool,
    ignore_index: int,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row weights that turn per-row terms into the loss, without a host sync.

    Returns ``(w_soft [N], w_hard [N], safe_labels [N] int64)`` with
    ``loss = sum_i w_soft[i] * soft_i + w_hard[i] * hard_i`` where ``soft_i`` is the unscaled
    soft term (KL or CE at temperature T) and ``hard_i`` the CE at temperature 1.
    """
    valid = torch.ones(n, dtype=torch.bool, device=device)
    if row_mask is not None:
        valid = row_mask.to(device=device, dtype=torch.bool).reshape(n)
    scale = temperature * temperature if t2_scaling else 1.0
    w_soft = valid.to(dtype) * (alpha * scale / valid.sum().clamp_min(1).to(dtype))
    if alpha != 1.0:
        lab = valid & (labels != ignore_index)
        w_hard = lab.to(dtype) * ((1.0 - alpha) / lab.sum().clamp_min(1).to(dtype))
        safe = torch.where(lab, labels, torch.zeros_like(labels))
    else:
        w_hard = torch.zeros(n, device=device, dtype=dtype)
        safe = torch.zeros(n, dtype=torch.long, device=device)
    return w_soft, w_hard, safe


def label_error(c: int, ignore_index: int, where: str) -> KdkitError:
    """The error for labels outside ``[0, C)`` that are not ``ignore_index`` (both paths)."""
    return KdkitError(
        f"labels must be class ids in [0, {c}) or ignore_index={ignore_index}; some rows that "
        "carry weight have a label outside that range",
        where=where,
        fix=f"map unlabelled rows to ignore_index={ignore_index} (or pass ignore_index=...) and "
        f"check that the label set matches the {c} logits",
    )


def check_labels_in_range(
    labels: torch.Tensor,  # [N]
    c: int,
    ignore_index: int,
    row_mask: torch.Tensor | None,
    where: str = "kd_loss(labels=...)",
) -> None:
    """Raise :func:`label_error` when a row in the hard term has a label outside ``[0, C)``.

    One reduction and one host read per call (a sync on CUDA, free on CPU)."""
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= c))
    if row_mask is not None:
        bad = bad & row_mask.to(device=labels.device, dtype=torch.bool).reshape(bad.shape)
    if bool(bad.any()):
        raise label_error(c, ignore_index, where)


def check_kd_args(
    student_logits, teacher_logits, labels, alpha: float, soft: str, temperature: float
) -> None:
    """Raise a :class:`KdkitError` for inputs ``kd_loss`` cannot take."""
    if soft not in SOFT_KINDS:
        raise KdkitError(
            f"unknown soft term {soft!r}", where="kd_loss(soft=...)", fix="use 'kl' or 'ce'"
        )
    if student_logits.dim() != 2 or student_logits.shape != teacher_logits.shape:
        raise KdkitError(
            f"student and teacher logits must both be [N, C]; got {tuple(student_logits.shape)} "
            f"and {tuple(teacher_logits.shape)}",
            where="kd_loss",
            fix="flatten token dimensions first: logits.reshape(-1, C)",
        )
    if not temperature > 0:
        raise KdkitError(
            f"temperature must be > 0, got {temperature}", where="kd_loss(temperature=...)"
        )
    if alpha != 1.0:
        if labels is None:
            raise KdkitError(
                f"alpha={alpha} mixes in the hard-label term, which needs labels",
                where="kd_loss(labels=None)",
                fix="pass labels [N] (int64, ignore_index for unlabelled rows) or use alpha=1",
            )
        if labels.shape != student_logits.shape[:1]:
            raise KdkitError(
                f"labels must be [N]={student_logits.shape[0]}; got {tuple(labels.shape)}",
                where="kd_loss(labels=...)",
            )


def kd_loss_reference(
    student_logits: torch.Tensor,  # [N, C]
    teacher_logits: torch.Tensor,  # [N, C], never receives a gradient
    labels: torch.Tensor | None = None,  # [N] int64
    *,
    temperature: float = 1.0,
    alpha: float = 1.0,
    soft: str = "kl",
    t2_scaling: bool = True,
    ignore_index: int = -100,
    row_mask: torch.Tensor | None = None,  # [N] bool
) -> torch.Tensor:
    """``alpha * mean_rows(soft) + (1 - alpha) * mean_labelled_rows(CE(z_s, y))`` in fp32.

    ``soft`` is ``T^2 * KL(p_t^T || p_s^T)`` (``"kl"``) or ``T^2 * CE(z_s/T, p_t^T)`` (``"ce"``),
    without the ``T^2`` when ``t2_scaling`` is false. A mean over zero rows is 0. Computed in
    float32 (float64 when the inputs are float64). Returns a 0-dim tensor.
    """
    check_kd_args(student_logits, teacher_logits, labels, alpha, soft, temperature)
    acc = torch.float64 if student_logits.dtype == torch.float64 else torch.float32
    zs = student_logits.to(acc)  # [N, C]
    zt = teacher_logits.detach().to(acc)  # [N, C]
    n = zs.shape[0]
    w_soft, w_hard, safe = row_weights(
        n,
        labels,
        row_mask,
        alpha=alpha,
        temperature=temperature,
        t2_scaling=t2_scaling,
        ignore_index=ignore_index,
        device=zs.device,
        dtype=acc,
    )
    if alpha != 1.0:
        check_labels_in_range(labels, zs.shape[1], ignore_index, row_mask)
    loss = zs.new_zeros(())
    if alpha != 0.0:
        log_ps = F.log_softmax(shifted(zs) / temperature, dim=-1)  # [N, C]
        log_pt = F.log_softmax(shifted(zt) / temperature, dim=-1)  # [N, C]
        pt = log_pt.exp()
        # 0 * (-inf) guard: entries the teacher masks with -inf (p_t = 0) contribute exactly 0
        live = pt > 0
        if soft == "kl":
            per = torch.where(live, pt * (log_pt - log_ps), torch.zeros_like(pt))
        else:
            per = torch.where(live, -pt * log_ps, torch.zeros_like(pt))
        loss = loss + (w_soft * per.sum(-1)).sum()
    if alpha != 1.0:
        # unweighted rows are ignore_index for cross_entropy: their CE is exactly 0, never
        # 0 * inf (a -inf logit at the placeholder class)
        target = torch.where(w_hard != 0, safe, torch.full_like(safe, ignore_index))
        ce = F.cross_entropy(zs, target, ignore_index=ignore_index, reduction="none")  # [N]
        loss = loss + (w_hard * ce).sum()
    return loss
