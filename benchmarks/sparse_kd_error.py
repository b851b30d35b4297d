"""How far sparse KD (top-k + tail bucket) is from full-logit KD: the table in docs/kernels.md.

    python benchmarks/sparse_kd_error.py [--rows 64] [--seed 0]

For each teacher family, C in {1000, 32000} and k in {8, 32, 128}: the float64 references of
``sparse_kd_loss`` and ``kd_loss`` (KL, T^2-scaled) on the same student logits, reporting the
teacher's tail mass q at the loss temperature, the relative loss gap ``(full - sparse) / full``
(>= 0: collapsing onto k + 1 buckets can only lower a KL), the relative L2 error of the student
gradient and its cosine with the full gradient. Three temperature settings: T = 1 stored at 1,
T = 2 stored at 2 (the buckets are exact), T = 2 rescaled from values stored at T = 1 (the tail's
mass at T = 2 is estimated by the ``midpoint`` or the ``bucket`` rule; its mean relative error is
the last column).

Teachers: ``gauss`` (logits 4 N(0, 1)), ``zipf`` (p proportional to rank^-2 in a random order,
with 0.1 N(0, 1) logit noise: a peaked head and a long, language-model-like tail). Students: the teacher's logits
plus 2 N(0, 1) noise (a student part-way through training).
"""

from __future__ import annotations

import argparse

import torch

from kdkit.kernels import kd_loss, rescale_topk, sparse_kd_loss, topk_teacher


def teacher_logits(kind: str, n: int, c: int, g: torch.Generator) -> torch.Tensor:
    if kind == "gauss":
        return 4.0 * torch.randn(n, c, generator=g, dtype=torch.float64)
    ranks = torch.stack([torch.randperm(c, generator=g) for _ in range(n)]) + 1
    return -2.0 * ranks.double().log() + 0.1 * torch.randn(n, c, generator=g, dtype=torch.float64)


def measure(
    zs: torch.Tensor, zt: torch.Tensor, k: int, t: float, stored_at: float, tail: str
) -> dict:
    x = zs.clone().requires_grad_()
    y = zs.clone().requires_grad_()
    top = topk_teacher(zt, k, stored_at)
    if stored_at != t:
        top = rescale_topk(top, t, tail=tail)
    sparse = sparse_kd_loss(x, top, t, impl="reference")
    full = kd_loss(y, zt, temperature=t, impl="reference")
    sparse.backward()
    full.backward()
    exact = topk_teacher(zt, k, t)  # the true buckets at T
    q_true = exact.tail_logmass.exp()
    g_err = ((x.grad - y.grad).norm() / y.grad.norm()).item()
    cos = torch.nn.functional.cosine_similarity(x.grad.flatten(), y.grad.flatten(), 0).item()
    q_err = ((top.tail_logmass.exp() - q_true).abs() / q_true.clamp_min(1e-300)).mean().item()
    return {
        "q": q_true.mean().item(),
        "loss_gap": ((full - sparse) / full).item(),
        "grad_err": g_err,
        "cos": cos,
        "q_err": q_err if stored_at != t else 0.0,
    }


#: (loss temperature, temperature the top-k was stored at, tail rule of the rescale)
SETTINGS = [(1.0, 1.0, ""), (2.0, 2.0, ""), (2.0, 1.0, "midpoint"), (2.0, 1.0, "bucket")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(
        "| teacher | C | k | T (stored at) | tail mass q | loss gap (full - sparse) / full "
        "| grad rel. L2 error | grad cosine | tail q rel. error |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for kind in ("gauss", "zipf"):
        for c in (1000, 32000):
            g = torch.Generator().manual_seed(args.seed)
            zt = teacher_logits(kind, args.rows, c, g)
            zs = zt + 2.0 * torch.randn(args.rows, c, generator=g, dtype=torch.float64)
            for k in (8, 32, 128):
                for t, stored, tail in SETTINGS:
                    m = measure(zs, zt, k, t, stored, tail)
                    how = f"{t:g} ({stored:g}{', ' + tail if stored != t else ''})"
                    print(
                        f"| {kind} | {c} | {k} | {how} | {m['q']:.3g} "
                        f"| {m['loss_gap']:.3g} | {m['grad_err']:.3g} | {m['cos']:.4f} "
                        f"| {m['q_err']:.3g} |"
                    )


if __name__ == "__main__":
    main()
