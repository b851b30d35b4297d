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


# ---------------------------------------------------------------- tiles of anchors with halos
# A program owns BT - 4W rows (tile_rows: W <= 3 -> BT 32, W <= 15 -> 64, else 128); these
# shapes span several tiles, so every owned row's gradient needs the halo anchors of its
# neighbours' tiles (recomputed, not scattered).


def test_tile_rows_rule():
    from kdkit.kernels.ckd.triton import tile_rows

    widths = (1, 3, 4, 10, 11, 12, 15, 16, 31)
    assert [tile_rows(w) for w in widths] == [32, 32, 64, 64, 64, 64, 64, 128, 128]
    assert all(tile_rows(w) - 4 * w >= 4 for w in range(1, 32))
    with pytest.raises(ValueError):
        tile_rows(32)


@pytest.mark.parametrize(
    "b,k,t,hs,ht,w",
    [
        (1, 2, 60, 8, 12, 2),  # BT 32, 28 owned rows: 3 tiles
        (2, 1, 70, 6, 5, 10),  # BT 64, 24 owned rows: 3 tiles, the priority window
        (1, 1, 49, 40, 33, 10),  # a tile boundary at 48, widths > BH
        (1, 1, 40, 4, 4, 12),  # BT 64, 16 owned rows: 3 tiles
        (1, 1, 90, 4, 4, 16),  # BT 128, 64 owned rows: 2 tiles
    ],
)
def test_several_tiles(b, k, t, hs, ht, w):
    run_case(b, k, t, hs, ht, w)


def test_padding_holes_across_tile_boundaries():
    """Masked tokens inside the sequence, at and around the tile boundaries (rows 24, 48)."""
    from kdkit.kernels.ckd.triton import ckd_loss_triton

    s, s64 = pair(randn(11, 2, 2, 60, 10))
    te = randn(12, 2, 2, 60, 7)
    m = torch.ones(2, 60, dtype=torch.bool, device=DEVICE)
    m[0, [0, 5, 23, 24, 25, 47, 48]] = False
    m[1, 40:] = False
    got = ckd_loss_triton(s, te, m, window=10)
    want = ckd_loss_reference(s64, te.double(), m, window=10)
    assert_close_loss(got.word_relation, want.word_relation, "fp32")
    (0.7 * got.word_relation).backward()
    (0.7 * want.word_relation).backward()
    assert_close_grad(s.grad, s64.grad, "fp32")
    assert (s.grad[1, :, 40:] == 0).all()  # padded tokens get exactly zero


def test_deterministic_and_no_atomics():
    """Two runs give bit-identical losses and gradients; the kernel source has no atomics."""
    import inspect

    from kdkit.kernels.ckd import triton as ckd_triton

    src = inspect.getsource(ckd_triton)
    assert "atomic" not in src.replace("no atomics", "").replace("No atomics", "")
    out = []
    for _ in range(2):
        s = randn(13, 1, 2, 50, 12).requires_grad_()
        terms = ckd_triton.ckd_loss_triton(s, randn(14, 1, 2, 50, 9), _ones(1, 50), window=10)
        terms.word_relation.backward()
        out.append((terms.word_relation.detach().clone(), s.grad.clone()))
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])


def _ones(b, t):
    return torch.ones(b, t, dtype=torch.bool, device=DEVICE)


@pytest.mark.parametrize("dtype,go", [("fp16", 65536.0), ("bf16", 1024.0), ("fp16", 1e-3)])
def test_loss_scaling_low_precision(dtype, go):
    """grad_output multiplies the fp32 gradient before its one rounding: fp16 at a loss scale
    of 65,536 neither overflows nor underflows."""
    run_case(1, 2, 40, 12, 8, 10, dtype=dtype, go=(go, 0.0))


@pytest.mark.parametrize("scale", [1e-3, 1e3])
def test_extreme_scales(scale):
    """The relations are scale-invariant; tiny and large hidden states give the reference's."""
    from kdkit.kernels.ckd.triton import ckd_loss_triton

    s, s64 = pair(randn(21, 1, 2, 40, 8, scale=scale))
    te = randn(22, 1, 2, 40, 6, scale=1.0 / scale)
    m = _ones(1, 40)
    got = ckd_loss_triton(s, te, m, window=10)
    want = ckd_loss_reference(s64, te.double(), m, window=10)
    assert_close_loss(got.word_relation, want.word_relation, "fp32", 1e-4)
    got.word_relation.backward()
    want.word_relation.backward()
    assert_close_grad(s.grad, s64.grad, "fp32", 1e-4)


def test_no_grad_forward_matches():
    """Without a student gradient the kernel skips dG (WRITE_GRAD=False): same loss."""
    from kdkit.kernels.ckd.triton import ckd_loss_triton

    s, te, m = randn(31, 1, 2, 30, 8), randn(32, 1, 2, 30, 5), _ones(1, 30)
    with torch.no_grad():
        a = ckd_loss_triton(s, te, m, window=4).word_relation
    b = ckd_loss_triton(s.clone().requires_grad_(), te, m, window=4).word_relation
    want = ckd_loss_reference(s.double(), te.double(), m, window=4).word_relation
    assert_close_loss(a, want, "fp32")
    assert abs(a.item() - b.item()) <= 1e-6 * abs(b.item())
