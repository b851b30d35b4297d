"""The packed CKD formulation (the CPU path of ``ckd_loss``) equals the Gram reference.

Losses and input gradients on random inputs: ragged rows (prefix masks, as CKD's span masks are,
and arbitrary holes), rows without any real token, windows wider than the row, K = 1..3 layers,
float64 (to ~1e-12: the same formulas on the same Gram entries) and float32 (to fp32 rounding),
a teacher that needs gradients, and ``ckd_loss``'s dispatch to it on CPU.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kdkit.kernels import ckd_loss, dispatch
from kdkit.kernels.ckd.packed import ckd_loss_packed, gram_blocks
from kdkit.kernels.ckd.reference import ckd_loss_reference


def _inputs(seed: int, b: int, k: int, t: int, hs: int, ht: int, holes: bool, dtype):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(b, k, t, hs, generator=g, dtype=torch.float64).to(dtype)
    te = torch.randn(b, k, t, ht, generator=g, dtype=torch.float64).to(dtype)
    lengths = torch.randint(0, t + 1, (b,), generator=g)  # 0: a row with no real token
    mask = torch.arange(t)[None, :] < lengths[:, None]
    if holes:
        mask &= torch.rand(b, t, generator=g) > 0.3
    # what sits at masked positions must not matter: make it large
    s = torch.where(mask[:, None, :, None], s, 1e3 * s)
    return s, te, mask


def _loss_and_grads(fn, s, te, mask, window, teacher_grad=False):
    s = s.detach().clone().requires_grad_()
    te = te.detach().clone().requires_grad_(teacher_grad)
    terms = fn(s, te, mask, window=window)
    (3.0 * terms.word_relation + 0.5 * terms.layer_relation).backward()
    return terms, s.grad, te.grad


@settings(max_examples=30, deadline=None)
@given(
    b=st.integers(1, 3),
    k=st.integers(1, 3),
    t=st.integers(1, 50),
    w=st.integers(1, 5),
    seed=st.integers(0, 10_000),
)
def test_gram_blocks_hold_every_band_entry(b, k, t, w, seed):
    """Every entry ``h_x . h_{x+d}``, ``|d| <= 2W``, sits where the docstring says (zeros past the
    row's ends), including at the seams between rows, where the symmetric formulation reads the
    previous row's zero block."""
    h = torch.randn(b, k, t, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    out = gram_blocks(h, w)
    bt = 2 * w
    nb = -(-t // bt)
    assert out.shape == (b, k, nb, bt, 3 * bt)
    hp = torch.nn.functional.pad(h, (0, 0, bt, (nb + 1) * bt - t))  # zeros around the row
    x = torch.arange(nb * bt)
    for d in range(-bt, bt + 1):
        want = (hp[:, :, bt + x] * hp[:, :, bt + x + d]).sum(-1)  # [B, K, nb bt]: h_x . h_{x+d}
        got = out[:, :, x // bt, x % bt, bt + x % bt + d]
        assert torch.allclose(got, want, atol=1e-12), d


def _close(a, b, rtol, atol):
    return torch.allclose(a, b, rtol=rtol, atol=atol)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    b=st.integers(1, 3),
    k=st.integers(1, 3),
    t=st.integers(1, 40),
    hs=st.integers(1, 9),
    ht=st.integers(1, 9),
    w=st.integers(1, 6),
    holes=st.booleans(),
)
def test_packed_equals_reference_float64(seed, b, k, t, hs, ht, w, holes):
    s, te, m = _inputs(seed, b, k, t, hs, ht, holes, torch.float64)
    want, want_gs, _ = _loss_and_grads(ckd_loss_reference, s, te, m, w)
    got, got_gs, _ = _loss_and_grads(ckd_loss_packed, s, te, m, w)
    for a, c in zip(got, want):
        assert _close(a, c, 1e-10, 1e-12), (a, c)
    assert _close(got_gs, want_gs, 1e-8, 1e-10), (got_gs - want_gs).abs().max()


@pytest.mark.parametrize("holes", [False, True])
@pytest.mark.parametrize(
    "shape", [(4, 2, 126, 64, 24, 10), (3, 3, 37, 16, 8, 4), (2, 1, 5, 8, 8, 10)]
)
def test_packed_equals_reference_float32(shape, holes):
    """fp32 at the CKD method's real shapes (batch x 2 layers x 126 spans, W = 10) and odd ones:
    both equal the float64 reference to fp32 rounding."""
    b, k, t, hs, ht, w = shape
    s, te, m = _inputs(7, b, k, t, hs, ht, holes, torch.float32)
    exact, exact_gs, _ = _loss_and_grads(ckd_loss_reference, s.double(), te.double(), m, w)
    for fn in (ckd_loss_reference, ckd_loss_packed):
        got, gs, _ = _loss_and_grads(fn, s, te, m, w)
        for a, c in zip(got, exact):
            assert _close(a.double(), c, 1e-5, 1e-8), (fn.__name__, a, c)
        scale = exact_gs.abs().max()
        assert (gs.double() - exact_gs).abs().max() <= 1e-4 * scale, fn.__name__
    # and the two fp32 paths agree with each other to the same rounding
    ref, ref_gs, _ = _loss_and_grads(ckd_loss_reference, s, te, m, w)
    got, got_gs, _ = _loss_and_grads(ckd_loss_packed, s, te, m, w)
    assert _close(got.word_relation, ref.word_relation, 1e-5, 1e-8)
    assert _close(got.layer_relation, ref.layer_relation, 1e-5, 1e-8)
    assert (got_gs - ref_gs).abs().max() <= 1e-4 * ref_gs.abs().max()


def test_packed_teacher_gradient_equals_reference():
    """A teacher that needs gradients takes the autograd path: both sides' gradients match."""
    s, te, m = _inputs(3, 2, 2, 17, 6, 5, True, torch.float64)
    want, want_gs, want_gt = _loss_and_grads(ckd_loss_reference, s, te, m, 3, teacher_grad=True)
    got, got_gs, got_gt = _loss_and_grads(ckd_loss_packed, s, te, m, 3, teacher_grad=True)
    assert _close(got.word_relation, want.word_relation, 1e-10, 1e-12)
    assert _close(got_gs, want_gs, 1e-8, 1e-10) and _close(got_gt, want_gt, 1e-8, 1e-10)


def test_packed_zero_length_differences_and_empty_rows_are_finite():
    s, te, m = _inputs(5, 2, 2, 9, 4, 3, False, torch.float32)
    s[:, :, 1] = s[:, :, 0]  # a repeated span: h_1 - h_0 = 0 (the reference's grouping gives 0)
    s[:, 1] = s[:, 0]  # a repeated layer
    m[1] = False  # a row with no span at all
    terms, gs, _ = _loss_and_grads(ckd_loss_packed, s, te, m, 3)
    ref, ref_gs, _ = _loss_and_grads(ckd_loss_reference, s, te, m, 3)
    assert all(torch.isfinite(x) for x in terms) and torch.isfinite(gs).all()
    assert _close(terms.word_relation, ref.word_relation, 1e-5, 1e-7)
    assert (gs[1] == 0).all()  # the empty row gets no gradient
    nothing = torch.zeros_like(m)
    empty, empty_gs, _ = _loss_and_grads(ckd_loss_packed, s, te, nothing, 3)
    assert empty.word_relation == 0 and empty.layer_relation == 0 and (empty_gs == 0).all()


def test_ckd_loss_runs_the_packed_path_on_cpu():
    s, te, m = _inputs(11, 2, 2, 23, 8, 6, False, torch.float32)
    dispatch.reset_last_impls()
    got = ckd_loss(s, te, m, window=4, impl="reference")
    assert dispatch.last_impls()["ckd_loss"] == "reference"
    packed = ckd_loss_packed(s, te, m, window=4)
    assert torch.equal(got.word_relation, packed.word_relation)
    assert torch.equal(got.layer_relation, packed.layer_relation)
