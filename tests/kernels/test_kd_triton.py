"""Triton kd_loss vs the float64 reference (CPU interpreter, or CUDA with KDKIT_TEST_DEVICE=cuda)."""

from __future__ import annotations

import pytest
import torch

import kdkit.kernels as K
from kdkit.kernels.kd.reference import kd_loss_reference
from tests.kernels.conftest import DEVICE, needs_triton
from tests.kernels.helpers import assert_close_grad, assert_close_loss, pair, randn

pytestmark = needs_triton


def triton_kd(*args, **kwargs):
    from kdkit.kernels.kd.triton import kd_loss_triton

    return kd_loss_triton(*args, **kwargs)


def run_case(
    n,
    c,
    *,
    dtype="fp32",
    block=None,
    temperature=2.0,
    alpha=0.3,
    soft="kl",
    t2=True,
    masked=False,
    ignored=True,
    go=1.7,
    seed=0,
):
    zs, zs64 = pair(randn(seed, n, c, scale=3.0, dtype=dtype))
    zt = randn(seed + 1, n, c, scale=3.0, dtype=dtype)
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, c, (n,), generator=g).to(DEVICE)
    if ignored:
        labels[::3] = -100
    row_mask = None
    if masked:
        row_mask = torch.ones(n, dtype=torch.bool, device=DEVICE)
        row_mask[1::2] = False
    kw = dict(temperature=temperature, alpha=alpha, soft=soft, t2_scaling=t2, row_mask=row_mask)
    got = triton_kd(zs, zt, labels, block_size=block, **kw)
    want = kd_loss_reference(zs64, zt.double(), labels, **kw)
    assert got.dtype == torch.float32 and got.dim() == 0
    assert_close_loss(got, want, dtype)
    (got * go).backward()
    (want * go).backward()
    assert_close_grad(zs.grad, zs64.grad, dtype)


# N, C, BLOCK: C=2, C=20, C not a power of two, C smaller than the block, C spanning many blocks.
SHAPES = [
    (1, 2, None),
    (7, 20, None),
    (5, 33, 16),
    (4, 5, 8),
    (3, 1000, 128),
    (9, 3, None),
    (2, 4099, 1024),
]


@pytest.mark.parametrize("n,c,block", SHAPES)
@pytest.mark.parametrize("soft", ["kl", "ce"])
def test_shapes(n, c, block, soft):
    run_case(n, c, block=block, soft=soft, masked=n > 3)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 4.0, 10.0])
def test_temperatures(temperature):
    run_case(6, 37, block=16, temperature=temperature, masked=True)


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("n,c,block", [(5, 33, 16), (3, 300, None)])
def test_dtypes(dtype, n, c, block):
    run_case(n, c, dtype=dtype, block=block, masked=True)


@pytest.mark.parametrize("alpha", [0.0, 1.0, 0.5])
def test_alpha_extremes(alpha):
    run_case(5, 11, alpha=alpha, ignored=alpha != 1.0)


def test_study_form_ce_t10_no_t2():
    run_case(4, 20, soft="ce", temperature=10.0, t2=False, alpha=1.0)


def test_all_rows_masked_or_ignored_gives_zero():
    zs, zt = randn(1, 4, 6).requires_grad_(), randn(2, 4, 6)
    labels = torch.full((4,), -100, device=DEVICE)
    mask = torch.zeros(4, dtype=torch.bool, device=DEVICE)
    loss = triton_kd(zs, zt, labels, alpha=0.5, row_mask=mask)
    loss.backward()
    assert loss.item() == 0.0 and zs.grad.abs().max().item() == 0.0


def test_public_op_dispatches_to_triton_and_teacher_gets_no_grad():
    zs, zt = randn(3, 4, 9).requires_grad_(), randn(4, 4, 9).requires_grad_()
    loss = K.kd_loss(zs, zt, temperature=3.0, impl="triton")
    loss.backward()
    assert K.last_impls()["kd_loss"] == "triton"
    assert zt.grad is None
    want = kd_loss_reference(zs.detach().double(), zt.detach().double(), temperature=3.0)
    assert abs(loss.item() - want.item()) < 1e-5


def test_non_contiguous_rows():
    base = randn(5, 6, 40)
    zs = base[:, ::2].detach().requires_grad_()  # [6, 20], row stride 40... column stride 2
    zt = randn(6, 6, 20)
    got = triton_kd(zs, zt, temperature=2.0)
    want = kd_loss_reference(zs.detach().double(), zt.double(), temperature=2.0)
    assert abs(got.item() - want.item()) < 1e-5
