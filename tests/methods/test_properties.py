"""Hypothesis property tests of the logit and feature losses as the methods compute them."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kdkit.plugins.methods.dist import DIST, DISTOptions
from kdkit.plugins.methods.kd import KD, KDOptions
from kdkit.plugins.methods.pkd import PKD, PKDOptions

from .helpers import batch, context, info, output

SETTINGS = settings(max_examples=40, deadline=None)


def _logits(seed: int, n: int, c: int, spread: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g, dtype=torch.float64) * spread


cases = st.tuples(st.integers(0, 10**6), st.integers(1, 8), st.integers(2, 6))


@SETTINGS
@given(cases, st.floats(0.5, 10.0), st.floats(-50, 50))
def test_kd_nonnegative_zero_at_teacher_and_shift_invariant(case, temperature, shift):
    seed, n, c = case
    zs, zt = _logits(seed, n, c), _logits(seed + 1, n, c)
    m = KD(KDOptions(alpha=1.0, temperature=temperature), context())
    kd = m(output(zs), output(zt), batch([0] * n))["kd"].item()
    assert kd >= -1e-12
    assert m(output(zt), output(zt), batch([0] * n))["kd"].item() == pytest.approx(0, abs=1e-10)
    # softmax ignores a constant added to a row's logits, on either side
    shifted = m(output(zs + shift), output(zt - shift), batch([0] * n))["kd"].item()
    assert shifted == pytest.approx(kd, rel=1e-6, abs=1e-9)


@SETTINGS
@given(cases, st.floats(0.5, 10.0))
def test_kd_t2_scaling_and_soft_ce_offset(case, temperature):
    seed, n, c = case
    zs, zt = output(_logits(seed, n, c)), output(_logits(seed + 1, n, c))
    y = batch([0] * n)
    value = lambda **kw: KD(KDOptions(alpha=1.0, temperature=temperature, **kw), context())(  # noqa: E731
        zs, zt, y
    )["kd"].item()
    assert value(t2_scaling=True) == pytest.approx(
        temperature**2 * value(t2_scaling=False), rel=1e-6
    )
    # soft CE = KL + H(p_t): never below KL
    pt = torch.softmax(zt.logits / temperature, -1)
    entropy = -(pt * pt.log()).sum(-1).mean().item()
    ce, kl = value(soft="ce", t2_scaling=False), value(soft="kl", t2_scaling=False)
    assert ce == pytest.approx(kl + entropy, rel=1e-6, abs=1e-9)


@SETTINGS
@given(st.tuples(st.integers(0, 10**6), st.integers(3, 10), st.integers(3, 6)), st.floats(-20, 20))
def test_dist_bounds_fixed_point_and_shift_invariance(case, shift):
    seed, n, c = case
    zs, zt = _logits(seed, n, c, 1.0), _logits(seed + 1, n, c, 1.0)
    m = DIST(DISTOptions(beta=1.5, gamma=0.5), context())
    value = m(output(zs), output(zt), batch([0] * n))["dist"].item()
    assert 0.0 <= value <= 2 * (1.5 + 0.5) + 1e-9
    # rho(p, p) = 1 up to the kernel's EPS guard, which matters only for near-constant columns
    at_teacher = m(output(zt), output(zt), batch([0] * n))["dist"].item()
    assert at_teacher <= value + 1e-9 and at_teacher == pytest.approx(0, abs=1e-3)
    moved = m(output(zs + shift), output(zt), batch([0] * n))["dist"].item()
    assert moved == pytest.approx(value, rel=1e-6, abs=1e-9)


@SETTINGS
@given(st.integers(0, 10**6), st.integers(2, 8))
def test_dist_inter_class_term_has_no_gradient_with_two_classes(seed, n):
    """With two classes rho(row) = ±1 and has no gradient — up to the kernel's EPS guard, which
    matters only for a near-uniform row (its centred values ~ EPS; e.g. logits 1.538 / 1.595 gave
    a 1.9e-6 gradient): rows whose two logits differ by at least 0.5 on both sides are checked."""
    zs = _logits(seed, n, 2).requires_grad_(True)
    zt = _logits(seed + 1, n, 2)
    m = DIST(DISTOptions(beta=1.0, gamma=0.0), context())
    m(output(zs), output(zt), batch([0] * n))["dist"].backward()
    assert torch.isfinite(zs.grad).all()
    clear = ((zs[:, 0] - zs[:, 1]).abs() > 0.5) & ((zt[:, 0] - zt[:, 1]).abs() > 0.5)
    assert torch.allclose(zs.grad[clear], torch.zeros_like(zs.grad[clear]), atol=1e-6)


@SETTINGS
@given(st.integers(0, 10**6), st.floats(0.01, 100.0))
def test_pkd_patient_loss_ignores_feature_scale(seed, scale):
    g = torch.Generator().manual_seed(seed)
    s, t = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    m = PKD(PKDOptions(project="none", alpha=1.0), context(info(3, 3), info(3, 3)))
    z = torch.zeros(4, 2)
    base = m(output(z, pooled={1: s, 2: s}), output(z, pooled={1: t, 2: t}), batch([0] * 4))["pkd"]
    big = m(output(z, pooled={1: s * scale, 2: s}), output(z, pooled={1: t, 2: t}), batch([0] * 4))
    assert 0 <= base.item() <= 40.0  # beta * [0, 4]
    assert big["pkd"].item() == pytest.approx(base.item(), rel=1e-5)
