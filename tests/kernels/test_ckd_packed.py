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

from kdkit.errors import KdkitError
from kdkit.kernels import ckd_loss, dispatch
from kdkit.kernels.ckd import relations_path
from kdkit.kernels.ckd.packed import (
    TeacherRelations,
    block_norms,
    ckd_loss_packed,
    gram_blocks,
    gram_entries,
    teacher_relations,
    window_lists,
)
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
    """``out[m, q, p] = h_X . h_{X - q + p}``, ``X = m bt + q``, over the rows padded to whole
    blocks and laid end to end layer by layer, with a zero block before the first layer and
    after each (and one more at the end), as the docstring says: across the seams between rows
    and layers too; and :func:`block_norms` reads every state's squared norm out of them."""
    h = torch.randn(b, k, t, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    out = gram_blocks(h, w)
    bt = 2 * w
    nb = -(-t // bt)
    assert out.shape == (1 + k * (b * nb + 1), bt, 2 * bt)
    zero = torch.zeros(bt, 3, dtype=h.dtype)
    rows = [zero]
    for layer in range(k):
        padded = torch.nn.functional.pad(h[:, layer], (0, 0, 0, nb * bt - t))  # [B, nb bt, H]
        rows += [padded.reshape(-1, 3), zero]
    rows = torch.cat([*rows, zero])  # [X, H]
    x = torch.arange(out.shape[0] * bt)
    for p in range(2 * bt):
        want = (rows[x] * rows[x - x % bt + p]).sum(-1)
        assert torch.allclose(out[x // bt, x % bt, p], want, atol=1e-12), p
    assert torch.allclose(block_norms(out, h.shape), (h * h).sum(-1), atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(
    b=st.integers(1, 3),
    k=st.integers(1, 3),
    t=st.integers(1, 40),
    w=st.integers(1, 4),
    holes=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_window_entries_are_the_gram_entries_of_each_window(b, k, t, w, holes, seed):
    """Every anchor's gathered entries are ``G_aa``, ``G_aj``, ``G_jj`` and ``G_jk`` (j < k) of its
    real others, read through the symmetry for earlier others, at every layer; entries of absent
    others are finite (the masks drop them)."""
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(b, k, t, 3, generator=gen, dtype=torch.float64)
    mask = torch.arange(t)[None, :] < torch.randint(0, t + 1, (b,), generator=gen)[:, None]
    if holes:
        mask &= torch.rand(b, t, generator=gen) > 0.3
    lists = window_lists(mask, w, k, torch.float64)
    g = gram_entries(h, lists, w)  # [K, C, N]
    assert torch.isfinite(g).all()
    offs = [*range(-w, 0), *range(1, w + 1)]
    pairs = [(i, j) for i in range(2 * w) for j in range(i + 1, 2 * w)]
    ab, aa = mask.nonzero(as_tuple=True)
    for n, (row, a) in enumerate(zip(ab.tolist(), aa.tolist(), strict=True)):
        real = [0 <= a + o < t and bool(mask[row, a + o]) for o in offs]
        assert lists.pair_valid[:, n].tolist() == [float(r) for r in real]
        for layer in range(k):
            hv = h[row, layer]
            entries = g[layer, :, n]
            assert torch.isclose(entries[0], hv[a] @ hv[a])
            for i, o in enumerate(offs):
                if real[i]:
                    assert torch.isclose(entries[1 + i], hv[a] @ hv[a + o])
                    assert torch.isclose(entries[1 + 2 * w + i], hv[a + o] @ hv[a + o])
            for u, (i, j) in enumerate(pairs):
                if real[i] and real[j]:
                    want = hv[a + offs[i]] @ hv[a + offs[j]]
                    assert torch.isclose(entries[1 + 4 * w + u], want)


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


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    b=st.integers(1, 3),
    k=st.integers(1, 3),
    t=st.integers(1, 40),
    w=st.integers(1, 5),
    holes=st.booleans(),
)
def test_teacher_relations_give_the_states_loss_and_gradient(seed, b, k, t, w, holes):
    """The teacher's precomputed relations give the loss and student gradient of its states
    (exactly: the states path computes the same relations), and they split into examples and
    join back unchanged."""
    s, te, mask = _inputs(seed, b, k, t, 5, 7, holes, torch.float64)
    rel = teacher_relations(te, mask, window=w)
    direct, g_direct, _ = _loss_and_grads(ckd_loss_packed, s, te, mask, w)
    s2 = s.detach().clone().requires_grad_()
    terms = ckd_loss_packed(s2, rel, mask, window=w)
    (3.0 * terms.word_relation + 0.5 * terms.layer_relation).backward()
    assert torch.equal(terms.word_relation, direct.word_relation)
    assert torch.equal(terms.layer_relation, direct.layer_relation)
    assert torch.equal(s2.grad, g_direct)
    counts = mask.sum(1).tolist()
    joined = TeacherRelations.cat(rel.rows(counts), torch.float64)
    assert all(torch.equal(x, y) for x, y in zip(joined, rel, strict=True))
    assert [r.anchors for r in rel.rows(counts)] == counts
    # fp16-safe: cosines and 1 - cosines only, absent others and same-layer entries zero
    assert all(bool((x.abs() <= 2 + 1e-9).all()) for x in rel)
    lists = window_lists(mask, w, k, torch.float64)
    assert not (rel.dist * (1 - lists.pair_valid)).any()
    pv = lists.pair_valid
    both = pv[:, None, :] * pv[None, :, :]  # [2W, 2W, N]: both others real
    iu, ju = torch.triu_indices(2 * w, 2 * w, 1)
    assert not (rel.upper * (1 - both[iu, ju])).any()
    assert not torch.diagonal(rel.layer_dist, dim1=-2, dim2=-1).any()


def test_teacher_relations_of_another_mask_are_refused():
    s, te, mask = _inputs(0, 2, 2, 12, 4, 6, False, torch.float32)
    mask = torch.ones_like(mask)
    rel = teacher_relations(te, mask, window=2)
    shorter = mask.clone()
    shorter[0, -1] = False
    with pytest.raises(KdkitError, match="teacher relations") as err:
        ckd_loss(s, rel, shorter, window=2)
    assert err.value.fix
    with pytest.raises(KdkitError, match="teacher relations"):
        ckd_loss(s, rel, mask, window=3)
    with pytest.raises(KdkitError, match="CPU"):
        ckd_loss(s, rel, mask, window=2, impl="triton")
    # which path takes relations: auto and reference on CPU tensors, never an explicit triton
    assert relations_path(s) and relations_path(s, "reference")
    assert not relations_path(s, "triton")


def test_window_index_is_int64_where_int32_could_overflow():
    """The index is int32 at ordinary sizes (half the bytes) and int64 once a layer's entries
    could pass 2**31: the same values either way."""
    small = window_lists(torch.ones(2, 8, dtype=torch.bool), 2, 2)
    assert small.index.dtype == torch.int32
    b, t, w = 5000, 1736, 31  # (b ceil(t / 2w) + 1) (2w) (4w) > 2**30 entries per layer
    mask = torch.zeros(b, t, dtype=torch.bool)
    mask[-1, -3:] = True  # three anchors in the last row
    big = window_lists(mask, w, 1)
    assert big.index.dtype == torch.int64
    bt = 2 * w
    nb = -(-t // bt)
    # the last anchor's G_aa: block 1 + (b - 1) nb + (t - 1) // bt, row (t - 1) % bt, column 0
    want = (1 + (b - 1) * nb + (t - 1) // bt) * bt * 2 * bt + ((t - 1) % bt) * (2 * bt + 1)
    assert int(big.index[0, -1]) == want
