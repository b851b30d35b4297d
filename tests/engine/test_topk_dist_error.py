"""DIST from a top-k cache: exact for k = C, and its error against full logits shrinks as k grows.

What a run from a top-k entry feeds DIST is the dense reconstruction
(:func:`kdkit.engine.topk_cache.dense_logits`: the top-k log-probabilities, the tail spread evenly).
``benchmarks/dist_topk_error.py`` measures the error for k < C (table in docs/caching.md); these
tests pin what must hold whatever the numbers:

* k = C reproduces DIST from the full logits (loss and gradient) at the stored and at another
  temperature;
* the reconstruction's error in the teacher's distribution at the stored temperature never grows
  with k (a theorem: moving the largest tail class into the top-k cannot increase
  ``sum_tail |p_c - mean_tail|``, by the triangle inequality) and is 0 at k = C;
* DIST's own loss and gradient error against full logits fall along k = 4 < 16 < 64 < C for a
  classifier-like and a long-tailed teacher (measured, with margins, on seeded data).
"""

from __future__ import annotations

import pytest
import torch

from kdkit.engine.topk_cache import dense_logits
from kdkit.kernels import dist_loss, topk_teacher


def _teacher(kind: str, n: int, c: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, c, generator=g, dtype=torch.float64)
    if kind == "classifier":  # confident, not saturated
        target = torch.randint(0, c, (n,), generator=g)
        return 2.0 * noise + 8.0 * torch.nn.functional.one_hot(target, c).double()
    ranks = torch.stack([torch.randperm(c, generator=g) for _ in range(n)]) + 1
    return -2.0 * ranks.double().log() + 0.1 * noise  # zipf-like long tail


def _dist(zs: torch.Tensor, zt: torch.Tensor, t: float) -> tuple[float, torch.Tensor]:
    x = zs.clone().requires_grad_()
    loss = dist_loss(x, zt, temperature=t, impl="reference")
    loss.backward()
    return loss.item(), x.grad


@pytest.mark.parametrize("t0, t", [(1.0, 1.0), (1.0, 2.0), (4.0, 1.0)])
def test_dist_from_topk_with_k_equal_c_is_exact(t0, t):
    zt = _teacher("classifier", 24, 37, 0)
    zs = zt + 2.0 * torch.randn(
        24, 37, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    recon = dense_logits(topk_teacher(zt, 37, t0)).double()
    full_loss, full_grad = _dist(zs, zt, t)
    loss, grad = _dist(zs, recon, t)
    assert loss == pytest.approx(full_loss, rel=1e-6, abs=1e-9)
    assert torch.allclose(grad, full_grad, rtol=1e-5, atol=1e-7 * full_grad.abs().max().item())


@pytest.mark.parametrize("kind", ["classifier", "zipf"])
def test_reconstruction_error_never_grows_with_k(kind):
    c, t0 = 50, 1.0
    zt = _teacher(kind, 16, c, 2)
    p = torch.softmax(zt / t0, -1)
    errors = []
    for k in range(1, c + 1):
        p_hat = torch.softmax(dense_logits(topk_teacher(zt, k, t0)).double() / t0, -1)
        errors.append((p_hat - p).abs().sum(-1))  # [N] per-row L1 error
    err = torch.stack(errors)  # [C, N]
    # float32 storage of the log-probabilities: allow rounding-level wiggle only
    assert (err[1:] <= err[:-1] + 1e-6).all(), (err[1:] - err[:-1]).max()
    assert (err[-1] < 1e-6).all()
    assert (err[0] > 1e-3).all()  # k = 1 really is an approximation here


@pytest.mark.parametrize("kind", ["classifier", "zipf"])
def test_dist_error_falls_as_k_grows(kind):
    c, n, t = 300, 48, 1.0
    zt = _teacher(kind, n, c, 3)
    zs = zt + 2.0 * torch.randn(
        n, c, generator=torch.Generator().manual_seed(4), dtype=torch.float64
    )
    full_loss, full_grad = _dist(zs, zt, t)
    loss_err, grad_err = [], []
    for k in (4, 16, 64, c):
        loss, grad = _dist(zs, dense_logits(topk_teacher(zt, k, t)).double(), t)
        loss_err.append(abs(loss - full_loss) / full_loss)
        grad_err.append(((grad - full_grad).norm() / full_grad.norm()).item())
    for errs in (loss_err, grad_err):
        assert all(b < 0.9 * a for a, b in zip(errs, errs[1:])), errs
        assert errs[0] > 0.01 and errs[-1] < 1e-5, errs
