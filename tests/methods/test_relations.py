"""kdkit.kernels.relations: hand-computed values and invariants."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kdkit.errors import KdkitError
from kdkit.kernels import infonce_loss
from kdkit.kernels.relations import (
    hint_mse,
    infonce_with_negatives,
    normalized_mse,
    pairwise_distances,
    rkd_angle_loss,
    rkd_distance_loss,
)

LINE = torch.tensor([[0.0], [1.0], [3.0]])  # three collinear points
TRIANGLE = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])  # right isosceles triangle


def _huber(x: float) -> float:
    return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5


def test_rkd_distance_by_hand():
    # student distances (01, 02, 12) = 1, 3, 2, mean 2; teacher 2, 2, 2*sqrt2
    s = [1 / 2, 3 / 2, 2 / 2]
    mu = (4 + 2 * math.sqrt(2)) / 3
    t = [2 / mu, 2 / mu, 2 * math.sqrt(2) / mu]
    expected = sum(_huber(a - b) for a, b in zip(s, t)) / 3
    assert rkd_distance_loss(LINE, TRIANGLE).item() == pytest.approx(expected, rel=1e-6)


def test_rkd_angle_by_hand():
    # anchor 0: student cos 1, teacher 0; anchor 1: -1 vs cos45; anchor 2: 1 vs cos45
    c = math.sqrt(0.5)
    expected = (_huber(1.0) + _huber(-1 - c) + _huber(1 - c)) / 3
    assert rkd_angle_loss(LINE, TRIANGLE).item() == pytest.approx(expected, rel=1e-6)


def test_small_batches_give_zero_with_gradient():
    x = torch.randn(2, 4, requires_grad=True)
    loss = rkd_angle_loss(x, torch.randn(2, 3)) + rkd_distance_loss(x[:1], torch.randn(1, 3))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_pairwise_distances_gradient_is_finite_for_duplicates():
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0], [4.0, 6.0]], requires_grad=True)
    d = pairwise_distances(x)
    assert d[0, 2].item() == pytest.approx(5.0) and d[0, 1].item() == 0.0
    d.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_normalized_mse_by_hand():
    s = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    t = torch.tensor([[0.0, 5.0], [-2.0, 0.0]])
    # row 0: 2 - 2*0.8 = 0.4; row 1: opposite directions -> 4
    assert normalized_mse(s, t).item() == pytest.approx((0.4 + 4.0) / 2)
    with pytest.raises(KdkitError, match="equal widths"):
        normalized_mse(s, torch.zeros(2, 3))


def test_hint_mse_by_hand_with_mask():
    s = torch.tensor([[[1.0, 1.0], [2.0, 2.0], [9.0, 9.0]]])
    t = torch.zeros(1, 3, 2)
    mask = torch.tensor([[1, 1, 0]])
    assert hint_mse(s, t, mask).item() == pytest.approx((1 + 1 + 4 + 4) / 4)
    assert hint_mse(s, t).item() == pytest.approx((2 + 8 + 162) / 6)


def test_infonce_with_negatives_by_hand_and_equal_to_kernel_without_queue():
    s, t, q = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    got = infonce_with_negatives(s, t, q, temperature=1.0)
    assert got.item() == pytest.approx(math.log(1 + math.exp(-1)))
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    assert infonce_with_negatives(s, t).item() == pytest.approx(infonce_loss(s, t).item(), rel=1e-6)


def _feats(seed: int, n: int, d: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.integers(3, 8), st.floats(0.01, 100.0), st.integers(1, 6))
def test_rkd_invariant_to_scale_width_and_translation(seed, n, scale, extra):
    s, t = _feats(seed, n, 4), _feats(seed + 1, n, 6)
    # a random orthogonal map into a wider space preserves every distance and angle
    q, _ = torch.linalg.qr(_feats(seed + 2, 4 + extra, 4 + extra))
    wide = torch.cat([s, s.new_zeros(n, extra)], 1) @ q
    for fn in (rkd_distance_loss, rkd_angle_loss):
        base = fn(s, t).item()
        assert base >= 0
        assert fn(s * scale, t).item() == pytest.approx(base, rel=1e-6, abs=1e-9)
        assert fn(s, t * scale).item() == pytest.approx(base, rel=1e-6, abs=1e-9)
        assert fn(wide, t).item() == pytest.approx(base, rel=1e-6, abs=1e-9)
        assert fn(s + 3.0, t).item() == pytest.approx(base, rel=1e-6, abs=1e-9)
        assert fn(t, t).item() == pytest.approx(0.0, abs=1e-12)
