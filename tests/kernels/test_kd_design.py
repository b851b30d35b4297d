"""kd_loss's traffic-minimal design, exercised in the interpreter: the persistent grid (fewer
programs than rows, as on a GPU), the backward's branch on grad_output read on the device, and
the aligned-vector row reads (leads, mismatched strides)."""

from __future__ import annotations

import pytest
import torch

from kdkit.kernels.kd import triton as kdt
from kdkit.kernels.kd.reference import kd_loss_reference, row_weights
from tests.kernels.conftest import DEVICE, needs_triton
from tests.kernels.helpers import assert_close_grad, assert_close_loss, pair, randn

pytestmark = needs_triton


@pytest.mark.parametrize("programs", [1, 3])
def test_persistent_grid_with_fewer_programs_than_rows(monkeypatch, programs):
    monkeypatch.setattr(kdt, "grid_size", lambda n, c, b, device: programs)
    zs, zs64 = pair(randn(0, 7, 45, scale=3.0))
    zt = randn(1, 7, 45, scale=3.0)
    labels = torch.tensor([0, 3, -100, 44, 7, -100, 1], device=DEVICE)
    kw = dict(temperature=2.0, alpha=0.4)
    got = kdt.kd_loss_triton(zs, zt, labels, block_size=16, **kw)
    want = kd_loss_reference(zs64, zt.double(), labels, **kw)
    assert_close_loss(got, want, "fp32")
    (got * 0.7).backward()
    (want * 0.7).backward()
    assert_close_grad(zs.grad, zs64.grad, "fp32")


def _backward_case(dtype):
    n, c = 4, 37
    zs = randn(2, n, c, scale=3.0, dtype=dtype)
    zt = randn(3, n, c, scale=3.0, dtype=dtype)
    labels = torch.tensor([1, -100, 36, 0], device=DEVICE)
    ws, wh, safe = row_weights(
        n,
        labels,
        None,
        alpha=0.5,
        temperature=2.0,
        t2_scaling=True,
        ignore_index=-100,
        device=zs.device,
    )
    _, grad, stats = kdt.kd_rows(zs, zt, ws, wh, safe, 2.0, "kl", True, True, True, 16)
    return zs, zt, grad, stats, ws, wh, safe


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_backward_with_grad_output_one_leaves_the_gradient_untouched(dtype):
    zs, zt, grad, stats, ws, wh, safe = _backward_case(dtype)
    sentinel = torch.full_like(grad, 0.125)
    one = torch.ones((), device=DEVICE)
    kdt.kd_backward(zs, zt, sentinel, stats, ws, wh, safe, one, 2.0, True, True, 16)
    assert (sentinel == 0.125).all()  # no pass over the gradient at all


def test_backward_scales_fp32_in_place_and_recomputes_bf16():
    zs, zt, grad, stats, ws, wh, safe = _backward_case("fp32")
    want = grad.clone() * 3.0
    kdt.kd_backward(zs, zt, grad, stats, ws, wh, safe, torch.tensor(3.0), 2.0, True, True, 16)
    assert torch.allclose(grad, want, rtol=1e-6, atol=0)
    zs, zt, grad, stats, ws, wh, safe = _backward_case("bf16")
    exact = grad.float() * 3.0
    garbage = torch.full_like(grad, 9.0)  # recompute: the buffer's old content does not matter
    kdt.kd_backward(zs, zt, garbage, stats, ws, wh, safe, torch.tensor(3.0), 2.0, True, True, 16)
    assert (garbage.float() - exact).abs().max().item() <= 0.02 * exact.abs().max().item()
    assert (garbage != 9.0).all()


def test_mismatched_row_strides_fall_back_to_scalar_accesses_correctly():
    base_s = randn(4, 5, 33, scale=3.0)
    base_t = randn(5, 5, 36, scale=3.0)
    zt = base_t[:, :33]  # row stride 36 vs 33: different leads modulo the vector
    assert kdt.vector_width(base_s, zt) == 1
    zs, zs64 = pair(base_s)
    got = kdt.kd_loss_triton(zs, zt, temperature=1.5, block_size=16)
    want = kd_loss_reference(zs64, zt.double(), temperature=1.5)
    assert_close_loss(got, want, "fp32")
    got.backward()
    want.backward()
    assert_close_grad(zs.grad, zs64.grad, "fp32")
