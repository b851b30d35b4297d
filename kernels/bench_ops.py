"""kdkit's fused ops described for ``kdkit bench`` (:class:`kdkit.bench.BenchOp`)."""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

from kdkit.bench.op import BenchOp, Provider
from kdkit.kernels import (
    ckd_loss,
    dist_loss,
    fused_linear_kd,
    infonce_loss,
    kd_loss,
    sparse_kd_loss,
)
from kdkit.kernels.ckd.packed import ckd_loss_packed
from kdkit.kernels.ckd.reference import ckd_loss_naive, ckd_loss_reference
from kdkit.kernels.dispatch import interpreting, triton_import_error
from kdkit.kernels.dist.reference import dist_loss_reference
from kdkit.kernels.infonce.reference import infonce_loss_reference
from kdkit.kernels.kd.fused_linear import fused_linear_kd_chunked, fused_linear_kd_reference
from kdkit.kernels.kd.reference import kd_loss_reference
from kdkit.kernels.sparse_kd.reference import sparse_kd_loss_reference
from kdkit.kernels.sparse_kd.topk import TopKTeacher, topk_teacher


def triton_available(device: torch.device) -> str | None:
    """Why the kdkit Triton provider cannot run on ``device`` (``None`` when it can)."""
    err = triton_import_error()
    if err:
        return err
    if device.type == "cuda" or interpreting():
        return None
    return "Triton kernels need a CUDA device (set TRITON_INTERPRET=1 to run tiny shapes in the CPU interpreter)"


def _rand(
    shape, dtype, device, seed: int, scale: float = 1.0, requires_grad: bool = False
) -> torch.Tensor:
    if device.type == "meta":
        return torch.empty(shape, dtype=dtype, device=device)
    g = torch.Generator(device=device).manual_seed(seed)
    x = (torch.randn(shape, generator=g, device=device, dtype=torch.float32) * scale).to(dtype)
    return x.requires_grad_(requires_grad)


def _nbytes(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


# ---------------------------------------------------------------------------- kd_loss

KD_OPTIONS = dict(temperature=2.0, alpha=0.5, soft="kl", t2_scaling=True)


def _kd_inputs(p, dtype, device, requires_grad) -> dict[str, Any]:
    n, c = p["n"], p["c"]
    labels = torch.zeros(n, dtype=torch.long, device=device)
    if device.type != "meta":
        labels = torch.randint(
            0, c, (n,), generator=torch.Generator(device=device).manual_seed(2), device=device
        )
        labels[::7] = -100
    return dict(
        student_logits=_rand((n, c), dtype, device, 0, 3.0, requires_grad),
        teacher_logits=_rand((n, c), dtype, device, 1, 3.0),
        labels=labels,
        **KD_OPTIONS,
    )


def _liger_available(device: torch.device) -> str | None:
    if importlib.util.find_spec("liger_kernel") is None:
        return "Liger-Kernel is not installed (pip install liger-kernel)"
    if device.type != "cuda":
        return "Liger-Kernel runs on CUDA only"
    return None


def _liger_kd(student_logits, teacher_logits, labels, temperature, alpha, soft, t2_scaling):
    """The same loss from Liger-Kernel's KL-divergence and cross-entropy kernels."""
    from liger_kernel.transformers import LigerCrossEntropyLoss, LigerKLDIVLoss

    t = temperature
    log_ps = torch.log_softmax(student_logits.float() / t, -1)
    log_pt = torch.log_softmax(teacher_logits.float() / t, -1)
    kl = LigerKLDIVLoss(reduction="batchmean", log_target=True)(log_ps, log_pt.detach())
    ce = LigerCrossEntropyLoss(ignore_index=-100)(student_logits, labels)
    return alpha * t * t * kl + (1 - alpha) * ce


def kd_bench_op(options: Any = None, context: Any = None) -> BenchOp:
    """``kd_loss`` (KL at T=2 + hard CE, alpha=0.5): bytes_min = N C (b_s + b_t [+ b_g])."""
    return BenchOp(
        name="kd_loss",
        description="temperature KD (KL) + hard-label CE, weighted",
        make_inputs=_kd_inputs,
        grad_inputs=("student_logits",),
        reference=kd_loss_reference,
        providers=_standard_providers(kd_loss, kd_loss_reference)
        + [Provider("liger", _liger_kd, available=_liger_available)],
        shapes={
            "priority": [
                {"n": n, "c": c} for n in (1024, 4096, 8192, 16384) for c in (2, 20, 32000, 128256)
            ],
            "quick": [{"n": 64, "c": 20}, {"n": 4096, "c": 2}, {"n": 512, "c": 8192}],
            "headline": [{"n": 8192, "c": 32000}, {"n": 8192, "c": 128256}],
        },
        bytes_min=lambda p, d, m: p["n"] * p["c"] * _nbytes(d) * (2 if m == "fwd" else 3),
        gate_params=lambda p: {"n": min(p["n"], 256), "c": p["c"]},
    )


# ---------------------------------------------------------------------------- dist_loss


def _dist_inputs(p, dtype, device, requires_grad) -> dict[str, Any]:
    n, c = p["n"], p["c"]
    return dict(
        student_logits=_rand((n, c), dtype, device, 0, 3.0, requires_grad),
        teacher_logits=_rand((n, c), dtype, device, 1, 3.0),
        beta=1.0,
        gamma=1.0,
        temperature=1.0,
    )


def dist_bench_op(options: Any = None, context: Any = None) -> BenchOp:
    """``dist_loss`` (beta = gamma = 1, T = 1): bytes_min = N C (b_s + b_t [+ b_g])."""
    return BenchOp(
        name="dist_loss",
        description="DIST Pearson inter-/intra-class relations",
        make_inputs=_dist_inputs,
        grad_inputs=("student_logits",),
        reference=dist_loss_reference,
        providers=_standard_providers(dist_loss, dist_loss_reference),
        shapes={
            "priority": [{"n": n, "c": c} for n in (1024, 8192) for c in (20, 32000)],
            "quick": [{"n": 64, "c": 20}, {"n": 512, "c": 8192}],
            "headline": [{"n": 8192, "c": 32000}],
        },
        bytes_min=lambda p, d, m: p["n"] * p["c"] * _nbytes(d) * (2 if m == "fwd" else 3),
        gate_params=lambda p: {"n": min(p["n"], 512), "c": p["c"]},
    )


# ---------------------------------------------------------------------------- infonce_loss


def _infonce_inputs(p, dtype, device, requires_grad) -> dict[str, Any]:
    b, d = p["b"], p["d"]
    return dict(
        student=_rand((b, d), dtype, device, 0, 1.0, requires_grad),
        teacher=_rand((b, d), dtype, device, 1, 1.0, requires_grad),
        temperature=0.07,
        normalize=True,
    )


def infonce_bench_op(options: Any = None, context: Any = None) -> BenchOp:
    """``infonce_loss`` with both sides trainable: flops_min = 2 B^2 d (fwd), 6 B^2 d (fwd+bwd)."""
    return BenchOp(
        name="infonce_loss",
        description="student-teacher InfoNCE, in-batch negatives, both sides trainable",
        make_inputs=_infonce_inputs,
        grad_inputs=("student", "teacher"),
        reference=infonce_loss_reference,
        providers=_standard_providers(infonce_loss, infonce_loss_reference),
        shapes={
            "priority": [{"b": b, "d": 768} for b in (1024, 8192, 32768)],
            "quick": [{"b": 64, "d": 32}, {"b": 2048, "d": 256}],
            "headline": [{"b": 8192, "d": 768}],
        },
        bytes_min=lambda p, d, m: p["b"] * p["d"] * _nbytes(d) * (2 if m == "fwd" else 4),
        flops_min=lambda p, d, m: (2 if m == "fwd" else 6) * p["b"] ** 2 * p["d"],
        gate_params=lambda p: {"b": min(p["b"], 8192), "d": p["d"]},
    )


# ---------------------------------------------------------------------------- ckd_loss


def _ckd_inputs(p, dtype, device, requires_grad) -> dict[str, Any]:
    b, k, t = p["b"], p["k"], p["t"]
    mask = torch.ones(b, t, dtype=torch.bool, device=device)
    if device.type != "meta" and b > 1:
        mask[b // 2 :, (3 * t) // 4 :] = False  # some padding
    return dict(
        student=_rand((b, k, t, p["hs"]), dtype, device, 0, 1.0, requires_grad),
        teacher=_rand((b, k, t, p["ht"]), dtype, device, 1),
        mask=mask,
        window=p["w"],
    )


def ckd_bench_op(options: Any = None, context: Any = None) -> BenchOp:
    """``ckd_loss`` (word + layer relations): bytes_min = B K T (Hs + Ht [+ Hs]) b."""
    return BenchOp(
        name="ckd_loss",
        description="CKD word / layer-transforming relations (Gram formulation)",
        make_inputs=_ckd_inputs,
        grad_inputs=("student",),
        reference=ckd_loss_reference,
        providers=_standard_providers(
            ckd_loss,
            ckd_loss_reference,
            compile_skip_quick="compiling the Gram CKD reference takes minutes on a CPU (run without --quick)",
        )
        + [Provider("packed", ckd_loss_packed), Provider("naive", ckd_loss_naive)],
        shapes={
            "priority": [
                {"b": 16, "k": k, "t": t, "hs": 384, "ht": 768, "w": 10}
                for k in (4, 12)
                for t in (128, 512)
            ],
            "quick": [
                {"b": 1, "k": 2, "t": 16, "hs": 16, "ht": 24, "w": 4},
                {"b": 2, "k": 4, "t": 128, "hs": 128, "ht": 256, "w": 10},
            ],
            "headline": [{"b": 16, "k": 7, "t": 512, "hs": 384, "ht": 768, "w": 10}],
        },
        bytes_min=lambda p, d, m: (
            p["b"]
            * p["k"]
            * p["t"]
            * (p["hs"] + p["ht"] + (0 if m == "fwd" else p["hs"]))
            * _nbytes(d)
        ),
        gate_params=lambda p: {**p, "b": min(p["b"], 2)},
        size_label=lambda p: f"B={p['b']},K={p['k']},T={p['t']},H={p['hs']}/{p['ht']},W={p['w']}",
    )


# ---------------------------------------------------------------------------- fused_linear_kd


def _flkd_inputs(p, dtype, device, requires_grad) -> dict[str, Any]:
    n, c, h = p["n"], p["c"], p["h"]
    labels = torch.zeros(n, dtype=torch.long, device=device)
    if device.type != "meta":
        labels = torch.randint(
            0, c, (n,), generator=torch.Generator(device=device).manual_seed(2), device=device
        )
    return dict(
        student_hidden=_rand((n, h), dtype, device, 0, 1.0, requires_grad),
        student_weight=_rand((c, h), dtype, device, 1, h**-0.5, requires_grad),
        teacher_hidden=_rand((n, h), dtype, device, 2),
        teacher_weight=_rand((c, h), dtype, device, 3, h**-0.5),
        labels=labels,
        **KD_OPTIONS,
    )


def fused_linear_kd_bench_op(options: Any = None, context: Any = None) -> BenchOp:
    """``fused_linear_kd``: flops_min = 2 N C H_t + 2 N C H_s (fwd), 2 N C (H_t + 3 H_s) (fwd+bwd)."""
    return BenchOp(
        name="fused_linear_kd",
        description="student/teacher linear heads + KD, logits never materialised (chunked)",
        make_inputs=_flkd_inputs,
        grad_inputs=("student_hidden", "student_weight"),
        reference=fused_linear_kd_reference,
        providers=_standard_providers(fused_linear_kd, fused_linear_kd_reference)
        + [Provider("chunked-torch", fused_linear_kd_chunked)],
        shapes={
            "priority": [{"n": 8192, "c": c, "h": 768} for c in (32000, 128256)],
            "quick": [{"n": 16, "c": 40, "h": 8}, {"n": 1024, "c": 8192, "h": 128}],
            # Liger's published fused-linear JSD point (H100): H=4096, V=128,256, BT=8192, bf16
            "headline": [{"n": 8192, "c": 128256, "h": 4096}],
        },
        bytes_min=lambda p, d, m: (
            (2 * p["n"] * p["h"] + 2 * p["c"] * p["h"]) * _nbytes(d) * (1 if m == "fwd" else 2)
        ),
        flops_min=lambda p, d, m: (
            2 * p["n"] * p["c"] * (p["h"] + (1 if m == "fwd" else 3) * p["h"])
        ),
        gate_params=lambda p: {**p, "n": min(p["n"], 256)},
    )


# ---------------------------------------------------------------------------- sparse_kd_loss


def _sparse_kd_inputs(p, dtype, device, requires_grad) -> dict[str, Any]:
    n, c, k = p["n"], p["c"], p["k"]
    if device.type == "meta":
        topk = TopKTeacher(
            torch.empty(n, k, dtype=torch.int32, device=device),
            torch.empty(n, k, device=device),
            torch.empty(n, device=device),
            2.0,
        )
    else:
        # a peaked teacher (logits of scale 6), its top-k taken at the loss temperature
        topk = topk_teacher(_rand((n, c), torch.float32, device, 1, 6.0), k, 2.0)
    labels = torch.zeros(n, dtype=torch.long, device=device)
    if device.type != "meta":
        labels[::7] = -100  # some ignored rows
    return dict(
        student_logits=_rand((n, c), dtype, device, 0, 3.0, requires_grad),
        topk=topk,
        temperature=2.0,
        labels=labels,
    )


def sparse_kd_bench_op(options: Any = None, context: Any = None) -> BenchOp:
    """``sparse_kd_loss`` (top-k + tail, T = 2): bytes_min = N C b_s [+ N C b_g] + N k 8."""
    return BenchOp(
        name="sparse_kd_loss",
        description="KL over the teacher's top-k(+tail) buckets vs full student logits",
        make_inputs=_sparse_kd_inputs,
        grad_inputs=("student_logits",),
        reference=sparse_kd_loss_reference,
        providers=_standard_providers(sparse_kd_loss, sparse_kd_loss_reference),
        shapes={
            "priority": [
                {"n": n, "c": c, "k": k}
                for n in (1024, 8192)
                for c in (32000, 128256)
                for k in (8, 128)
            ],
            "quick": [{"n": 64, "c": 20, "k": 5}, {"n": 512, "c": 8192, "k": 32}],
            "headline": [{"n": 8192, "c": 32000, "k": 128}, {"n": 8192, "c": 128256, "k": 128}],
        },
        bytes_min=lambda p, d, m: (
            p["n"] * p["c"] * _nbytes(d) * (1 if m == "fwd" else 2) + p["n"] * p["k"] * 8
        ),
        gate_params=lambda p: {**p, "n": min(p["n"], 256)},
    )


def _standard_providers(public, reference, compile_skip_quick: str | None = None) -> list[Provider]:
    """kdkit Triton (through the public op), the eager reference, the reference compiled."""
    return [
        Provider(
            "kdkit-triton",
            lambda **kw: public(**kw, impl="triton"),
            available=triton_available,
            interpreter=True,
        ),
        Provider("reference", reference),
        Provider("torch-compile", reference, compile=True, skip_quick=compile_skip_quick),
    ]


def builtin_ops() -> list[BenchOp]:
    """kdkit's own bench ops (also registered through :mod:`kdkit.kernels.plugin`)."""
    return [
        kd_bench_op(),
        dist_bench_op(),
        infonce_bench_op(),
        ckd_bench_op(),
        fused_linear_kd_bench_op(),
        sparse_kd_bench_op(),
    ]
