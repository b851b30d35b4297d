"""Triton infonce_loss vs the float64 reference."""

from __future__ import annotations

import pytest

import kdkit.kernels as K
from kdkit.kernels.infonce.reference import infonce_loss_reference
from tests.kernels.conftest import DEVICE, needs_triton
from tests.kernels.helpers import assert_close_grad, assert_close_loss, pair, randn

pytestmark = needs_triton


def run_case(b, d, *, dtype="fp32", tau=0.07, normalize=True, teacher_grad=True, go=0.6, seed=0):
    from kdkit.kernels.infonce.triton import infonce_loss_triton

    s, s64 = pair(randn(seed, b, d, dtype=dtype))
    t, t64 = pair(randn(seed + 1, b, d, dtype=dtype))
    t.requires_grad_(teacher_grad)
    t64.requires_grad_(teacher_grad)
    got = infonce_loss_triton(s, t, temperature=tau, normalize=normalize)
    want = infonce_loss_reference(s64, t64, temperature=tau, normalize=normalize)
    # On a GPU, bf16/fp16 tiles go through tensor cores: the normalised rows are rounded to the
    # storage dtype before the products (the interpreter computes in fp32).
    lowp = DEVICE == "cuda" and dtype != "fp32"
    lt, gt = (2e-2, 5e-2) if lowp else (None, None)
    assert_close_loss(got, want, dtype, lt)
    (got * go).backward()
    (want * go).backward()
    assert_close_grad(s.grad, s64.grad, dtype, gt)
    if teacher_grad:
        assert_close_grad(t.grad, t64.grad, dtype, gt)
    else:
        assert t.grad is None


# B not a multiple of the 16-row tiles, B smaller than a tile, d not a power of two, d > BD.
@pytest.mark.parametrize("b,d", [(1, 4), (7, 5), (16, 16), (37, 20), (50, 100)])
@pytest.mark.parametrize("teacher_grad", [True, False])
def test_shapes(b, d, teacher_grad):
    run_case(b, d, teacher_grad=teacher_grad)


@pytest.mark.parametrize("tau", [0.05, 0.07, 0.5, 1.0, 4.0])
def test_temperatures(tau):
    run_case(23, 12, tau=tau)


def test_unnormalised():
    run_case(21, 9, normalize=False, tau=2.0)


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16"])
def test_dtypes(dtype):
    run_case(19, 24, dtype=dtype)


def test_public_op_dispatches_to_triton():
    s, t = randn(3, 9, 8), randn(4, 9, 8)
    got = K.infonce_loss(s, t, impl="triton")
    assert K.last_impls()["infonce_loss"] == "triton"
    want = infonce_loss_reference(s.double(), t.double())
    assert abs(got.item() - want.item()) < 1e-5
