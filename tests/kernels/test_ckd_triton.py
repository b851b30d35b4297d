"""Triton ckd_loss vs the float64 reference."""

from __future__ import annotations

import pytest
import torch

import kdkit.kernels as K
from kdkit.kernels.ckd.reference import ckd_loss_reference
from tests.kernels.conftest import DEVICE, needs_triton
from tests.kernels.helpers import assert_close_grad, assert_close_loss, pair, randn

pytestmark = needs_triton


def mask_for(b, t, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(max(1, t // 2), t + 1, (b,), generator=g)
    lengths[0] = t
    return (torch.arange(t)[None, :] < lengths[:, None]).to(DEVICE)


def run_case(b, k, t, hs, ht, w, *, dtype="fp32", seed=0, go=(1.3, 0.4)):
    from kdkit.kernels.ckd.triton import ckd_loss_triton

    s, s64 = pair(randn(seed, b, k, t, hs, dtype=dtype))
    te = randn(seed + 1, b, k, t, ht, dtype=dtype)
    m = mask_for(b, t, seed)
    got = ckd_loss_triton(s, te, m, window=w)
    want = ckd_loss_reference(s64, te.double(), m, window=w)
    assert_close_loss(got.word_relation, want.word_relation, dtype)
    assert_close_loss(got.layer_relation, want.layer_relation, dtype)
    (go[0] * got.word_relation + go[1] * got.layer_relation).backward()
    (go[0] * want.word_relation + go[1] * want.layer_relation).backward()
    assert_close_grad(s.grad, s64.grad, dtype)


# (B, K, T, Hs, Ht, W): T smaller than the window, widths not powers of two and > BH, W = 10.
@pytest.mark.parametrize(
    "b,k,t,hs,ht,w",
    [
        (1, 1, 3, 4, 4, 1),
        (2, 3, 11, 6, 4, 3),
        (2, 2, 9, 40, 33, 2),
        (1, 2, 25, 8, 12, 10),
        (3, 1, 7, 5, 9, 5),
    ],
)
def test_shapes(b, k, t, hs, ht, w):
    run_case(b, k, t, hs, ht, w)


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16"])
def test_dtypes(dtype):
    run_case(2, 2, 10, 12, 7, 2, dtype=dtype)


def test_zero_length_differences_finite():
    from kdkit.kernels.ckd.triton import ckd_loss_triton

    s = randn(3, 1, 2, 6, 4)
    s[:, :, 1] = s[:, :, 0]  # repeated token
    s[:, 1] = s[:, 0]  # repeated layer
    s.requires_grad_()
    te = randn(4, 1, 2, 6, 3)
    terms = ckd_loss_triton(s, te, torch.ones(1, 6, dtype=torch.bool, device=DEVICE), window=2)
    sum(terms).backward()
    assert all(torch.isfinite(x) for x in terms) and torch.isfinite(s.grad).all()


def test_public_op_dispatch_and_frozen_teacher_fallback():
    s, te, m = randn(5, 1, 2, 6, 4), randn(6, 1, 2, 6, 5), torch.ones(1, 6, device=DEVICE)
    got = K.ckd_loss(s, te, m, window=2, impl="triton")
    assert K.last_impls()["ckd_loss"] == "triton"
    want = ckd_loss_reference(s.double(), te.double(), m, window=2)
    assert abs(got.word_relation.item() - want.word_relation.item()) < 1e-5
    with pytest.raises(K.KernelUnavailableError, match="frozen"):
        K.ckd_loss(s, te.requires_grad_(), m, window=2, impl="triton")
