"""The fused formulations do not allocate the quadratic intermediates of the naive ones.

Peak memory on CPU = peak of the running sum of torch CPU allocations (profiler memory events).
Under the Triton interpreter a kernel's tiles are numpy arrays the size of one tile (registers on
a GPU); they are not counted here (tracemalloc would, but slows the interpreter tenfold).
"""

from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from kdkit.kernels.ckd.reference import ckd_loss_naive, ckd_loss_reference
from kdkit.kernels.infonce.reference import infonce_loss_reference
from tests.kernels.conftest import DEVICE, needs_triton

pytestmark = pytest.mark.skipif(DEVICE != "cpu", reason="CPU peak-memory measurement")


def peak_bytes(fn) -> int:
    """Peak extra bytes the torch CPU allocator holds while ``fn()`` runs."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def _ckd_inputs(h=256):
    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 2, 128, h, generator=g).requires_grad_()
    t = torch.randn(2, 2, 128, h, generator=g)
    return s, t, torch.ones(2, 128, dtype=torch.bool)


def test_peak_memory_measurement_sees_allocations():
    assert peak_bytes(lambda: torch.empty(1 << 20).fill_(1.0)) >= 4 << 20


def test_ckd_gram_formulation_avoids_difference_tensor():
    s, t, m = _ckd_inputs()
    w = 10
    diff_tensor = 2 * 2 * 128 * (2 * w + 1) * 256 * 4  # [B, K, T, 2W+1, H] fp32 = 11 MB

    def run(fn):
        return lambda: sum(fn(s, t, m, window=w)).backward()

    naive = peak_bytes(run(ckd_loss_naive))
    gram = peak_bytes(run(ckd_loss_reference))
    assert naive >= diff_tensor
    assert gram < diff_tensor and gram < naive / 3, (gram, naive, diff_tensor)


@needs_triton
def test_ckd_triton_allocates_no_window_tensor():
    from kdkit.kernels.ckd.triton import ckd_loss_triton

    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 2, 32, 16, generator=g).requires_grad_()
    t = torch.randn(2, 2, 32, 16, generator=g)
    m = torch.ones(2, 32, dtype=torch.bool)
    w = 10
    inputs = s.numel() * 4 + t.numel() * 4
    window_tensor = 2 * 2 * 32 * (2 * w + 1) * (2 * w + 1) * 4  # even the [B,K,T,J,J] relation
    peak = peak_bytes(lambda: ckd_loss_triton(s, t, m, window=w).word_relation.backward())
    assert peak < window_tensor / 3 and peak < 4 * inputs, (peak, window_tensor, inputs)


@needs_triton
def test_infonce_tiled_never_materialises_bxb():
    from kdkit.kernels.infonce.triton import infonce_loss_triton

    b, d = 384, 8
    g = torch.Generator().manual_seed(0)
    s = torch.randn(b, d, generator=g).requires_grad_()
    t = torch.randn(b, d, generator=g).requires_grad_()
    bxb = b * b * 4
    ref = peak_bytes(lambda: infonce_loss_reference(s, t).backward())
    tiled = peak_bytes(lambda: infonce_loss_triton(s, t).backward())
    assert ref >= bxb
    assert tiled < bxb / 4, (tiled, bxb)


@needs_triton
def test_ckd_triton_needs_ten_times_less_memory_than_naive():
    """Issue 17's target: the fused CKD holds >= 10x less memory than the naive formulation
    (forward + backward of both terms, W = 10; the naive one builds [B, K, T, 2W+1, H])."""
    from kdkit.kernels.ckd.triton import ckd_loss_triton

    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 2, 48, 32, generator=g).requires_grad_()
    t = torch.randn(2, 2, 48, 32, generator=g)
    m = torch.ones(2, 48, dtype=torch.bool)
    m[1, 40:] = False
    naive = peak_bytes(lambda: sum(ckd_loss_naive(s, t, m, window=10)).backward())
    s.grad = None
    fused = peak_bytes(lambda: sum(ckd_loss_triton(s, t, m, window=10)).backward())
    assert naive >= 10 * fused, (naive, fused)
