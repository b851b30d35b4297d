"""Triton sparse_kd_loss vs the float64 reference (CPU interpreter, or CUDA with KDKIT_TEST_DEVICE=cuda).

Shapes are tiny (the interpreter runs every program in Python): few rows, and blocks that cover
a row in one to three steps.
"""

from __future__ import annotations

import pytest
import torch

import kdkit.kernels as K
from kdkit.errors import KdkitError
from kdkit.kernels.kd.reference import kd_loss_reference
from kdkit.kernels.sparse_kd.reference import sparse_kd_loss_reference
from kdkit.kernels.sparse_kd.topk import TopKTeacher, topk_teacher
from tests.kernels.conftest import DEVICE, needs_triton
from tests.kernels.helpers import assert_close_grad, assert_close_loss, pair, randn

pytestmark = needs_triton


def triton_sparse(*args, **kwargs):
    from kdkit.kernels.sparse_kd.triton import sparse_kd_loss_triton

    return sparse_kd_loss_triton(*args, **kwargs)


def run_case(
    n,
    c,
    k,
    *,
    dtype="fp32",
    block=None,
    temperature=2.0,
    stored_at=None,
    ignored=True,
    reduction="mean",
    go=1.7,
    seed=0,
    zs=None,
    zt=None,
):
    """Loss and gradient of the Triton path vs the float64 reference on the same inputs."""
    zs = randn(seed, n, c, scale=3.0, dtype=dtype) if zs is None else zs
    zt = randn(seed + 1, n, c, scale=3.0) if zt is None else zt
    topk = topk_teacher(zt, k, temperature if stored_at is None else stored_at)
    labels = None
    if ignored:
        labels = torch.randint(0, c, (n,), generator=torch.Generator().manual_seed(seed)).to(DEVICE)
        labels[1::3] = -100
    x, x64 = pair(zs)
    kw = dict(labels=labels, reduction=reduction)
    got = triton_sparse(x, topk, temperature, block_size=block, **kw)
    want = sparse_kd_loss_reference(x64, topk, temperature, **kw)
    assert got.dtype == torch.float32
    if reduction == "none":
        assert got.shape == (n,)
        g_out = torch.linspace(0.5, 2.0, n, device=DEVICE)
        (got * g_out).sum().backward()
        (want * g_out.double()).sum().backward()
        assert torch.allclose(got.double(), want, rtol=2e-5, atol=2e-5), (got, want)
    else:
        assert got.dim() == 0
        assert_close_loss(got, want, dtype)
        (got * go).backward()
        (want * go).backward()
    assert_close_grad(x.grad, x64.grad, dtype)
    return got, x.grad


# N, C, k, BLOCK: C = 1; C smaller than the block; C not a multiple of the block; many blocks;
# k = C; k walked in two chunks of MAX_KBLOCK (256) entries.
SHAPES = [
    (2, 1, 1, None),
    (3, 20, 5, None),
    (4, 33, 8, 16),
    (2, 300, 32, 128),
    (3, 37, 37, 16),
    (1, 600, 300, 1024),
]


@pytest.mark.parametrize("n,c,k,block", SHAPES)
def test_shapes(n, c, k, block):
    run_case(n, c, k, block=block)


@pytest.mark.parametrize("temperature,stored_at", [(0.5, 0.5), (1.0, 2.0), (10.0, 1.0)])
def test_temperatures_and_rescaled_teachers(temperature, stored_at):
    run_case(3, 20, 6, block=16, temperature=temperature, stored_at=stored_at)


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16"])
def test_storage_dtypes_with_grad_output_not_one(dtype):
    # bf16/fp16 recompute the gradient in backward and round once; fp32 scales in place
    go = 65536.0 if dtype == "fp16" else 1.7
    run_case(3, 33, 7, dtype=dtype, block=16, temperature=4.0, go=go)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_reduction_none_with_per_row_grad_output(dtype):
    run_case(4, 20, 4, dtype=dtype, block=32, reduction="none")


def test_reduction_sum():
    run_case(3, 20, 4, block=32, reduction="sum")


def test_k_equals_c_is_full_kd_loss():
    zs, zt = randn(7, 4, 29, scale=3.0), randn(8, 4, 29, scale=3.0)
    x, y = zs.clone().requires_grad_(), zs.clone().requires_grad_()
    got = triton_sparse(x, topk_teacher(zt, 29, 3.0), 3.0, block_size=16)
    want = kd_loss_reference(y, zt, temperature=3.0)
    (got * 1.3).backward()
    (want * 1.3).backward()
    assert abs(got.item() - want.item()) <= 2e-6 * want.item()
    assert (x.grad - y.grad).abs().max().item() <= 2e-6 * y.grad.abs().max().item()


def test_all_rows_ignored_gives_zero_and_no_nan():
    zs = randn(1, 3, 12).requires_grad_()
    zs.data[1] = float("-inf")  # a row of only -inf logits, ignored: still exactly 0
    labels = torch.full((3,), -100, device=DEVICE)
    loss = triton_sparse(zs, topk_teacher(randn(2, 3, 12), 4, 2.0), 2.0, labels, block_size=16)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(zs.grad, torch.zeros_like(zs.grad))


def test_extreme_and_masked_student_logits():
    """|z| ~ 1e4 and -inf student entries outside the teacher's top-k: finite, like the reference."""
    n, c, k = 3, 40, 6
    cols = torch.arange(c, device=DEVICE)
    for seed, scale, every in ((11, 1e4, 3), (13, 1.0, 2)):
        zt = randn(seed, n, c, scale=scale)
        top = topk_teacher(zt, k, 1.0).indices.long()
        outside = torch.ones(n, c, dtype=torch.bool, device=DEVICE).scatter(1, top, False)
        zs = torch.where(
            outside & (cols % every == 0), float("-inf"), randn(seed + 1, n, c, scale=scale)
        )
        got, grad = run_case(n, c, k, block=16, temperature=1.0, zs=zs, zt=zt, ignored=False)
        assert torch.isfinite(got) and torch.isfinite(grad).all()
        assert (grad[zs == float("-inf")] == 0).all()


def test_peaked_student_keeps_its_tiny_tail():
    """A student with nearly all its mass on the teacher's top-k: the tail r ~ 1e-10 is kept
    (S - S_K in float64), so the loss matches the reference instead of overflowing."""
    c, k = 50, 3
    zt = randn(15, 2, c)
    top = topk_teacher(zt, k, 1.0).indices.long()
    zs = torch.full((2, c), -23.0, device=DEVICE).scatter(1, top, 0.0)  # tail ~ 47 e^-23
    got, _ = run_case(2, c, k, block=64, temperature=1.0, zs=zs, zt=zt, ignored=False)
    assert torch.isfinite(got) and got.item() > 1.0


def test_labels_out_of_range_and_bad_indices_raise():
    zs, zt = randn(1, 3, 10), randn(2, 3, 10)
    topk = topk_teacher(zt, 3, 1.0)
    with pytest.raises(KdkitError, match=r"labels must be class ids in \[0, 10\)"):
        triton_sparse(zs, topk, 1.0, torch.tensor([0, 10, -100], device=DEVICE))
    bad = topk._replace(indices=topk.indices.clone().fill_(11))
    with pytest.raises(KdkitError, match="outside that range"):
        triton_sparse(zs, bad, 1.0)
    too_many = TopKTeacher(
        torch.zeros(3, 11, dtype=torch.int32, device=DEVICE),
        torch.zeros(3, 11, device=DEVICE),
        torch.zeros(3, device=DEVICE),
        1.0,
    )
    with pytest.raises(KdkitError, match="k=11 .* C=10"):
        triton_sparse(zs, too_many, 1.0)


def test_public_op_dispatches_to_triton_and_teacher_gets_no_grad():
    zs, zt = randn(3, 4, 9).requires_grad_(), randn(4, 4, 9)
    topk = topk_teacher(zt, 3, 2.0)
    lp = topk.logprobs.clone().requires_grad_()
    loss = K.sparse_kd_loss(zs, topk._replace(logprobs=lp), 2.0, impl="triton")
    loss.backward()
    assert K.last_impls()["sparse_kd_loss"] == "triton"
    assert lp.grad is None
    want = sparse_kd_loss_reference(zs.detach().double(), topk, 2.0)
    assert abs(loss.item() - want.item()) < 1e-5


def test_non_contiguous_rows():
    base = randn(5, 4, 40)
    zs = base[:, ::2].detach().requires_grad_()  # [4, 20], column stride 2
    topk = topk_teacher(randn(6, 4, 20), 5, 2.0)
    got = triton_sparse(zs, topk, 2.0, block_size=32)
    want = sparse_kd_loss_reference(zs.detach().double(), topk, 2.0)
    assert abs(got.item() - want.item()) < 1e-5
