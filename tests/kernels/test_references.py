"""Properties of the PyTorch references (the spec of every kernel)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from kdkit.kernels import ckd_loss_naive
from kdkit.kernels.ckd.reference import ckd_loss_reference
from kdkit.kernels.dist.reference import dist_loss_reference, pearson
from kdkit.kernels.infonce.reference import infonce_loss_reference
from kdkit.kernels.kd.reference import kd_loss_reference

FAST = settings(max_examples=15, deadline=None)
temps = st.sampled_from([0.5, 1.0, 2.0, 4.0, 10.0])


def logits(seed: int, n: int, c: int, scale: float = 3.0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, c, generator=g, dtype=torch.float64) * scale).to(dtype)


# ---------------------------------------------------------------------------- kd_loss


def test_kd_matches_textbook_formula():
    zs, zt = logits(0, 6, 5), logits(1, 6, 5)
    y = torch.tensor([0, 1, 2, -100, 4, 3])
    t, a = 4.0, 0.3
    kl = F.kl_div(
        F.log_softmax(zs / t, 1), F.log_softmax(zt / t, 1), log_target=True, reduction="batchmean"
    )
    keep = y != -100
    ce = F.cross_entropy(zs[keep], y[keep])
    want = a * t * t * kl + (1 - a) * ce
    got = kd_loss_reference(zs, zt, y, temperature=t, alpha=a)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)


def test_kd_study_form_soft_ce_without_t2():
    zs, zt = logits(2, 4, 3), logits(3, 4, 3)
    t = 10.0
    pt = torch.softmax(zt / t, 1)
    want = -(pt * F.log_softmax(zs / t, 1)).sum(1).mean()
    got = kd_loss_reference(zs, zt, temperature=t, soft="ce", t2_scaling=False)
    assert torch.allclose(got, want, rtol=1e-12)
    # CE = KL + H(p_t)
    kl = kd_loss_reference(zs, zt, temperature=t, soft="kl", t2_scaling=False)
    ent = -(pt * pt.log()).sum(1).mean()
    assert torch.allclose(got, kl + ent, rtol=1e-12)


def test_kd_row_mask_excludes_rows_from_both_means():
    zs, zt = logits(4, 7, 6), logits(5, 7, 6)
    y = torch.tensor([1, 2, 3, 4, 5, 0, 1])
    mask = torch.tensor([1, 0, 1, 1, 0, 1, 1], dtype=torch.bool)
    got = kd_loss_reference(zs, zt, y, alpha=0.4, temperature=2.0, row_mask=mask)
    want = kd_loss_reference(zs[mask], zt[mask], y[mask], alpha=0.4, temperature=2.0)
    assert torch.allclose(got, want, rtol=1e-12)


def test_kd_teacher_gets_no_gradient():
    zs = logits(6, 3, 4).requires_grad_()
    zt = logits(7, 3, 4).requires_grad_()
    kd_loss_reference(zs, zt, temperature=2.0).backward()
    assert zt.grad is None and zs.grad is not None


@FAST
@given(seed=st.integers(0, 10_000), n=st.integers(1, 9), c=st.integers(2, 40), t=temps)
def test_kd_kl_nonnegative_and_zero_on_itself(seed, n, c, t):
    zs, zt = logits(seed, n, c), logits(seed + 1, n, c)
    assert kd_loss_reference(zs, zt, temperature=t) >= -1e-12
    assert abs(kd_loss_reference(zt, zt, temperature=t).item()) < 1e-10


@FAST
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 9),
    c=st.integers(2, 40),
    t=temps,
    soft=st.sampled_from(["kl", "ce"]),
)
def test_kd_invariant_to_row_constants(seed, n, c, t, soft):
    zs, zt = logits(seed, n, c), logits(seed + 1, n, c)
    shift_s = torch.randn(n, 1, dtype=torch.float64) * 50
    shift_t = torch.randn(n, 1, dtype=torch.float64) * 50
    y = torch.randint(0, c, (n,))
    a = kd_loss_reference(zs, zt, y, temperature=t, alpha=0.5, soft=soft)
    b = kd_loss_reference(zs + shift_s, zt + shift_t, y, temperature=t, alpha=0.5, soft=soft)
    assert torch.allclose(a, b, rtol=1e-9, atol=1e-9)


@FAST
@given(seed=st.integers(0, 10_000), n=st.integers(1, 9), c=st.integers(2, 40), t=temps)
def test_kd_gradient_rows_sum_to_zero(seed, n, c, t):
    zs = logits(seed, n, c).requires_grad_()
    zt = logits(seed + 1, n, c)
    y = torch.randint(0, c, (n,))
    kd_loss_reference(zs, zt, y, temperature=t, alpha=0.3).backward()
    assert torch.allclose(zs.grad.sum(1), torch.zeros(n, dtype=torch.float64), atol=1e-12)


def test_kd_temperature_limits():
    zs, zt = logits(8, 5, 7), logits(9, 5, 7)
    # T -> inf: T^2 KL -> (1/2C) sum((z_s - mean) - (z_t - mean))^2 per row (the logit-matching limit)
    t = 1e4
    got = kd_loss_reference(zs, zt, temperature=t)
    ds = (zs - zs.mean(1, keepdim=True)) - (zt - zt.mean(1, keepdim=True))
    want = (ds**2).sum(1).mean() / (2 * zs.shape[1])
    assert torch.allclose(got, want, rtol=1e-3)
    # T -> 0 with one-hot teacher: soft CE -> hinge-free CE on the argmax, times 1/T, finite
    small = kd_loss_reference(zs, zt, temperature=0.01, t2_scaling=False)
    assert torch.isfinite(small)


def test_kd_alpha_zero_is_plain_cross_entropy():
    zs, zt = logits(10, 6, 4), logits(11, 6, 4)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    assert torch.allclose(
        kd_loss_reference(zs, zt, y, alpha=0.0), F.cross_entropy(zs, y), rtol=1e-12
    )


# ---------------------------------------------------------------------------- dist_loss


@FAST
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(2, 9),
    c=st.integers(2, 30),
    t=temps,
    beta=st.floats(0, 3),
    gamma=st.floats(0, 3),
)
def test_dist_bounds(seed, n, c, t, beta, gamma):
    zs, zt = logits(seed, n, c), logits(seed + 1, n, c)
    v = dist_loss_reference(zs, zt, beta=beta, gamma=gamma, temperature=t).item()
    assert -1e-9 <= v <= 2 * (beta + gamma) + 1e-9


def test_dist_zero_on_itself_and_matches_numpy_pearson():
    z = logits(12, 8, 6)
    assert abs(dist_loss_reference(z, z).item()) < 1e-9
    a, b = torch.softmax(logits(13, 8, 6), 1), torch.softmax(z, 1)
    import numpy as np

    want = np.mean([np.corrcoef(a[i].numpy(), b[i].numpy())[0, 1] for i in range(8)])
    assert abs(pearson(a, b, 1).mean().item() - want) < 1e-7


def test_dist_two_classes_row_term_is_sign():
    zs, zt = logits(14, 9, 2), logits(15, 9, 2)
    r = pearson(torch.softmax(zs, 1), torch.softmax(zt, 1), 1)
    assert torch.allclose(r.abs(), torch.ones(9, dtype=torch.float64), atol=1e-6)


def test_dist_constant_rows_finite_gradient():
    zs = torch.zeros(4, 5, dtype=torch.float64, requires_grad=True)  # uniform p_s
    zt = logits(16, 4, 5)
    loss = dist_loss_reference(zs, zt)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(zs.grad).all()


# ---------------------------------------------------------------------------- infonce_loss


@FAST
@given(
    seed=st.integers(0, 10_000),
    b=st.integers(1, 12),
    d=st.integers(1, 20),
    tau=st.sampled_from([0.05, 0.07, 0.5, 1.0]),
    normalize=st.booleans(),
)
def test_infonce_equals_ce_over_materialised_matrix(seed, b, d, tau, normalize):
    s, t = logits(seed, b, d, 1.0), logits(seed + 1, b, d, 1.0)
    if normalize:
        sn, tn = s / s.norm(dim=1, keepdim=True), t / t.norm(dim=1, keepdim=True)
    else:
        sn, tn = s, t
    sim = sn @ tn.T / tau
    want = -(torch.diagonal(sim) - torch.logsumexp(sim, 1)).mean()
    got = infonce_loss_reference(s, t, temperature=tau, normalize=normalize)
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-10)
    assert got >= 0 or b == 1


def test_infonce_gradient_to_teacher_only_when_required():
    s = logits(17, 5, 3).requires_grad_()
    t = logits(18, 5, 3)
    infonce_loss_reference(s, t).backward()
    assert s.grad is not None and t.grad is None
    t.requires_grad_()
    infonce_loss_reference(s, t).backward()
    assert t.grad is not None and t.grad.abs().sum() > 0


# ---------------------------------------------------------------------------- ckd_loss


def hidden(seed, b, k, t, h, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, k, t, h, generator=g, dtype=torch.float64) * scale


def random_mask(seed, b, t):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    return torch.arange(t)[None, :] < lengths[:, None]


@FAST
@given(
    seed=st.integers(0, 10_000),
    b=st.integers(1, 3),
    k=st.integers(1, 4),
    t=st.integers(1, 14),
    hs=st.integers(1, 9),
    ht=st.integers(1, 9),
    w=st.integers(1, 5),
)
def test_ckd_gram_equals_naive(seed, b, k, t, hs, ht, w):
    s, te, m = hidden(seed, b, k, t, hs), hidden(seed + 1, b, k, t, ht), random_mask(seed, b, t)
    got = ckd_loss_reference(s, te, m, window=w)
    want = ckd_loss_naive(s, te, m, window=w)
    assert torch.allclose(got.word_relation, want.word_relation, rtol=1e-9, atol=1e-9)
    assert torch.allclose(got.layer_relation, want.layer_relation, rtol=1e-9, atol=1e-9)


def test_ckd_gram_gradient_equals_naive_gradient():
    s1 = hidden(1, 2, 3, 11, 6).requires_grad_()
    s2 = s1.detach().clone().requires_grad_()
    te, m = hidden(2, 2, 3, 11, 4), random_mask(3, 2, 11)
    sum(ckd_loss_reference(s1, te, m, window=3)).backward()
    sum(ckd_loss_naive(s2, te, m, window=3)).backward()
    assert torch.allclose(s1.grad, s2.grad, rtol=1e-8, atol=1e-10)


@FAST
@given(seed=st.integers(0, 10_000), scale_s=st.floats(0.1, 10), scale_t=st.floats(0.1, 10))
def test_ckd_invariant_to_scale_and_zero_on_itself(seed, scale_s, scale_t):
    s, te, m = hidden(seed, 2, 3, 9, 8), hidden(seed + 1, 2, 3, 9, 5), random_mask(seed, 2, 9)
    base = ckd_loss_reference(s, te, m, window=3)
    scaled = ckd_loss_reference(s * scale_s, te * scale_t, m, window=3)
    for a, b in zip(base, scaled):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-9)
    same = ckd_loss_reference(s, s * scale_t, m, window=3)
    assert same.word_relation.abs() < 1e-9 and same.layer_relation.abs() < 1e-9


def test_ckd_width_independent():
    # An orthogonal embedding into a wider space keeps every Gram entry, hence the losses.
    s, te, m = hidden(4, 2, 3, 9, 5), hidden(5, 2, 3, 9, 5), random_mask(6, 2, 9)
    q, _ = torch.linalg.qr(torch.randn(12, 12, dtype=torch.float64))
    wide = te @ q[:5]  # [.., 12]
    a, b = ckd_loss_reference(s, te, m, window=2), ckd_loss_reference(s, wide, m, window=2)
    assert torch.allclose(a.word_relation, b.word_relation, rtol=1e-9)
    assert torch.allclose(a.layer_relation, b.layer_relation, rtol=1e-9)


def test_ckd_zero_length_differences_are_finite():
    s = hidden(7, 1, 2, 6, 4)
    s[:, :, 1] = s[:, :, 0]  # repeated token: h_1 - h_0 = 0
    s[:, 1] = s[:, 0]  # repeated layer
    s.requires_grad_()
    te, m = hidden(8, 1, 2, 6, 3), torch.ones(1, 6, dtype=torch.bool)
    terms = ckd_loss_reference(s, te, m, window=2)
    sum(terms).backward()
    assert all(torch.isfinite(x) for x in terms) and torch.isfinite(s.grad).all()


def test_ckd_padding_is_ignored():
    s, te = hidden(9, 2, 2, 8, 4), hidden(10, 2, 2, 8, 3)
    m = torch.ones(2, 8, dtype=torch.bool)
    m[1, 5:] = False
    a = ckd_loss_reference(s, te, m, window=2)
    s2, te2 = s.clone(), te.clone()
    s2[1, :, 5:] = 1e3 * torch.randn(2, 3, 4, dtype=torch.float64)
    te2[1, :, 5:] = 7.0
    b = ckd_loss_reference(s2, te2, m, window=2)
    assert torch.allclose(a.word_relation, b.word_relation) and torch.allclose(
        a.layer_relation, b.layer_relation
    )


def test_ckd_hand_computed_tiny_case():
    # B=1, K=1, T=2, W=1: one pair each way; angle entries only j=k (cos = 1 both sides) -> 0.
    s = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]], dtype=torch.float64)  # orthogonal: dist 1
    te = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]], dtype=torch.float64)  # parallel: dist 0
    m = torch.ones(1, 2, dtype=torch.bool)
    terms = ckd_loss_reference(s, te, m, window=1)
    # distances (1 vs ~0)^2 = 1; teacher's difference vector is zero -> its angle is 0, student's 1
    assert math.isclose(terms.word_relation.item(), 1.0 + 1.0, rel_tol=1e-6)
    assert terms.layer_relation.item() == 0.0
