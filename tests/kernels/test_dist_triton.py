"""Triton dist_loss vs the float64 reference."""

from __future__ import annotations

import warnings

import pytest

import kdkit.kernels as K
from kdkit.kernels.dist.reference import dist_loss_reference
from tests.kernels.conftest import needs_triton
from tests.kernels.helpers import assert_close_grad, assert_close_loss, pair, randn

pytestmark = needs_triton


def run_case(
    n, c, *, dtype="fp32", block=None, temperature=2.0, beta=1.5, gamma=0.7, go=2.5, seed=0
):
    from kdkit.kernels.dist.triton import dist_loss_triton

    zs, zs64 = pair(randn(seed, n, c, scale=3.0, dtype=dtype))
    zt = randn(seed + 1, n, c, scale=3.0, dtype=dtype)
    kw = dict(beta=beta, gamma=gamma, temperature=temperature)
    got = dist_loss_triton(zs, zt, block_size=block, **kw)
    want = dist_loss_reference(zs64, zt.double(), **kw)
    assert_close_loss(got, want, dtype)
    (got * go).backward()
    (want * go).backward()
    assert_close_grad(zs.grad, zs64.grad, dtype)


@pytest.mark.parametrize(
    "n,c,block", [(1, 5, None), (4, 2, None), (7, 20, None), (9, 33, 16), (3, 4, 8), (17, 130, 32)]
)
def test_shapes(n, c, block):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_case(n, c, block=block)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 4.0, 10.0])
def test_temperatures(temperature):
    run_case(6, 21, block=16, temperature=temperature)


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16"])
def test_dtypes(dtype):
    run_case(10, 37, dtype=dtype, block=16)


def test_only_one_term():
    run_case(5, 9, beta=0.0, gamma=1.0)
    run_case(5, 9, beta=1.0, gamma=0.0)


def test_public_op_dispatches_to_triton():
    zs, zt = randn(3, 6, 10), randn(4, 6, 10)
    got = K.dist_loss(zs, zt, impl="triton")
    assert K.last_impls()["dist_loss"] == "triton"
    assert abs(got.item() - dist_loss_reference(zs.double(), zt.double()).item()) < 1e-5
