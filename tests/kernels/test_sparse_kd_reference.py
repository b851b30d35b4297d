"""The top-k(+tail) teacher representation and the sparse-KD reference (the spec of the kernel)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import kdkit.kernels as K
from kdkit.errors import KdkitError
from kdkit.kernels.kd.reference import kd_loss_reference
from kdkit.kernels.sparse_kd.reference import sparse_kd_loss_reference
from kdkit.kernels.sparse_kd.topk import (
    TopKTeacher,
    bucket_logprobs,
    rescale,
    tail_log_bounds,
    topk_teacher,
)
from tests.kernels.conftest import HAS_TRITON

FAST = settings(max_examples=15, deadline=None)
temps = st.sampled_from([0.5, 1.0, 2.0, 4.0, 10.0])


def logits(seed: int, n: int, c: int, scale: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g, dtype=torch.float64) * scale


# ---------------------------------------------------------------------------- representation


def test_topk_teacher_holds_the_top_k_and_the_tail():
    z = logits(0, 4, 30)
    t = 2.0
    top = topk_teacher(z, 5, t, keep_logits=True)
    p = torch.softmax(z / t, 1)
    want_p, want_i = p.topk(5, 1)
    assert top.indices.dtype == torch.int32 and torch.equal(top.indices.long(), want_i)
    assert torch.allclose(top.logprobs.exp(), want_p, rtol=1e-12)
    assert torch.allclose(top.tail_logmass.exp(), 1 - want_p.sum(1), rtol=1e-10)
    assert top.num_classes == 30
    assert torch.equal(top.logits, z.gather(1, want_i)) and top.temperature == t
    # the k + 1 buckets are a distribution
    total = top.logprobs.exp().sum(1) + top.tail_logmass.exp()
    assert torch.allclose(total, torch.ones(4, dtype=torch.float64), rtol=1e-12)


def test_topk_teacher_tail_is_minus_inf_when_k_is_c_and_accurate_when_tiny():
    z = logits(1, 3, 8)
    assert torch.isneginf(topk_teacher(z, 8).tail_logmass).all()
    # a tail of ~1e-30: log(1 - sum p) would give log(0) = -inf in float64, the masked lse not
    z = torch.tensor([[0.0, -70.0, -80.0]], dtype=torch.float64)
    tail = topk_teacher(z, 1).tail_logmass
    assert tail.item() == pytest.approx(math.log(math.exp(-70) + math.exp(-80)), rel=1e-12)
    # float32 teacher logits give float32 values
    assert topk_teacher(z.float(), 2).logprobs.dtype == torch.float32


def test_rescale_is_exact_when_k_is_c_and_keeps_top_k_ratios():
    z = logits(2, 5, 12)
    for t_new in (0.5, 1.0, 4.0):
        full = rescale(topk_teacher(z, 12, 2.0), t_new)
        direct = topk_teacher(z, 12, t_new)
        # same ids (the order is the same at every temperature), exact values
        assert torch.equal(full.indices, direct.indices)
        assert torch.allclose(full.logprobs, direct.logprobs, rtol=1e-12, atol=1e-12)
        assert torch.isneginf(full.tail_logmass).all() and full.temperature == t_new
        # k < C: ratios among the top-k entries are exact at any temperature
        part = rescale(topk_teacher(z, 4, 2.0), t_new)
        lp = torch.log_softmax(z / t_new, 1).gather(1, part.indices.long())
        d_got = part.logprobs - part.logprobs[:, :1]
        assert torch.allclose(d_got, lp - lp[:, :1], rtol=1e-12, atol=1e-12)


def test_rescale_from_logits_equals_rescale_from_logprobs():
    z = logits(3, 6, 40, scale=5.0)
    a = rescale(topk_teacher(z, 7, 1.0, keep_logits=True), 3.0)
    b = rescale(topk_teacher(z, 7, 1.0), 3.0)
    assert torch.allclose(a.logprobs, b.logprobs, atol=1e-12)
    assert torch.allclose(a.tail_logmass, b.tail_logmass, atol=1e-12)
    # at the stored temperature nothing changes
    same = rescale(topk_teacher(z, 7, 1.0), 1.0)
    assert torch.allclose(same.logprobs, topk_teacher(z, 7).logprobs, atol=1e-12)


@FAST
@given(seed=st.integers(0, 10_000), t=temps, t_new=temps, k=st.integers(1, 9))
def test_true_tail_lies_within_the_documented_bounds(seed, t, t_new, k):
    """docs/kernels.md: with a = T/T', x_c = p_c^(T) over the m tail classes (sum q) and p_(k) the
    smallest top-k probability, the true tempered tail sum_c x_c^a lies in
    [m^(1-a) q^a, min(q^a, p_(k)^(a-1) q)] for a >= 1 and [max(q^a, p_(k)^(a-1) q), m^(1-a) q^a]
    for a <= 1; "bucket" uses q^a, "midpoint" the geometric mean of the bounds."""
    c = 10
    z = logits(seed, 1, c)
    top = topk_teacher(z, k, t)
    a = t / t_new
    p = torch.softmax(z / t, 1)[0]
    tail = torch.ones(c, dtype=torch.bool)
    tail[top.indices.long()[0]] = False
    x = p[tail]
    m, q, p_k = x.numel(), x.sum().item(), top.logprobs.exp()[0, -1].item()
    if m == 0:
        return
    true = (x**a).sum().item()
    if a >= 1:
        lo, hi = m ** (1 - a) * q**a, min(q**a, p_k ** (a - 1) * q)
    else:
        lo, hi = max(q**a, p_k ** (a - 1) * q), m ** (1 - a) * q**a
    assert lo * (1 - 1e-9) <= true <= hi * (1 + 1e-9)
    log_lo, log_hi = tail_log_bounds(top.logprobs, top.tail_logmass, a, m)
    assert log_lo.item() == pytest.approx(math.log(lo), abs=1e-9)
    assert log_hi.item() == pytest.approx(math.log(hi), abs=1e-9)
    pa = top.logprobs.exp()[0] ** a
    for rule, w in (("bucket", q**a), ("midpoint", math.sqrt(lo * hi))):
        lp, lq = bucket_logprobs(top, t_new, dtype=torch.float64, tail=rule)
        assert lq.exp().item() == pytest.approx(w / (pa.sum().item() + w), rel=1e-9)
        assert torch.allclose(lp.exp()[0], pa / (pa.sum() + w), rtol=1e-9)


def test_midpoint_tail_beats_the_one_class_bucket():
    """On a peaked teacher moved from T = 1 to T' = 2 and to T' = 0.5, the midpoint's tail mass is
    closer to the true one than the bucket's (which lies at or beyond an end of the interval)."""
    z = logits(20, 16, 500, scale=4.0)
    top = topk_teacher(z, 16, 1.0)
    for t_new in (2.0, 0.5):
        true = topk_teacher(z, 16, t_new).tail_logmass.exp()
        err = {
            rule: ((rescale(top, t_new, tail=rule).tail_logmass.exp() - true).abs() / true).mean()
            for rule in ("midpoint", "bucket")
        }
        assert err["midpoint"] < 0.5 * err["bucket"], err


# ---------------------------------------------------------------------------- the loss


def test_sparse_kd_matches_the_bucket_formula():
    zs, zt = logits(4, 5, 9), logits(5, 5, 9)
    t, k = 2.0, 3
    top = topk_teacher(zt, k, t)
    idx = top.indices.long()
    ps, pt = torch.softmax(zs / t, 1), torch.softmax(zt / t, 1)
    s_k, p_k = ps.gather(1, idx), pt.gather(1, idx)
    r, q = 1 - s_k.sum(1), 1 - p_k.sum(1)
    kl = (p_k * (p_k / s_k).log()).sum(1) + q * (q / r).log()
    got = sparse_kd_loss_reference(zs, top, t)
    assert torch.allclose(got, t * t * kl.mean(), rtol=1e-12)
    assert torch.allclose(
        sparse_kd_loss_reference(zs, top, t, reduction="none"), t * t * kl, rtol=1e-12
    )
    assert torch.allclose(sparse_kd_loss_reference(zs, top, t, reduction="sum"), t * t * kl.sum())
    no_t2 = sparse_kd_loss_reference(zs, top, t, t2_scaling=False)
    assert torch.allclose(no_t2, kl.mean(), rtol=1e-12)


@pytest.mark.parametrize("t,stored_at", [(1.0, 1.0), (2.0, 0.5), (10.0, 10.0)])
def test_k_equal_c_is_exactly_full_kd(t, stored_at):
    zs = logits(6, 6, 15).requires_grad_()
    zt = logits(7, 6, 15)
    labels = torch.tensor([0, -100, 3, 4, -100, 14])
    y = zs.detach().clone().requires_grad_()
    got = sparse_kd_loss_reference(zs, topk_teacher(zt, 15, stored_at), t, labels)
    want = kd_loss_reference(y, zt, temperature=t, row_mask=labels != -100)
    got.backward()
    want.backward()
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-13)
    assert torch.allclose(zs.grad, y.grad, rtol=1e-10, atol=1e-13)


@FAST
@given(seed=st.integers(0, 10_000), t=temps, k=st.integers(1, 12))
def test_properties(seed, t, k):
    """0 <= sparse KL <= full KL (collapsing onto buckets cannot increase a KL), 0 at the teacher,
    invariant to a constant per row, gradient rows sum to 0."""
    zs, zt = logits(seed, 4, 12), logits(seed + 1, 4, 12)
    top = topk_teacher(zt, k, t)
    x = zs.clone().requires_grad_()
    loss = sparse_kd_loss_reference(x, top, t, reduction="none")
    full = kd_loss_reference(zs, zt, temperature=t) * 4
    assert (loss >= -1e-12).all() and loss.sum() <= full + 1e-9
    shift = sparse_kd_loss_reference(zs + logits(seed + 2, 4, 1), top, t, reduction="none")
    assert torch.allclose(loss, shift, rtol=1e-9, atol=1e-11)
    assert sparse_kd_loss_reference(zt, top, t).abs().item() < 1e-10
    loss.sum().backward()
    assert torch.allclose(x.grad.sum(1), torch.zeros(4, dtype=torch.float64), atol=1e-12)


def test_ignored_rows_give_zero_without_nan():
    zs = logits(8, 3, 6).requires_grad_()
    with torch.no_grad():
        zs[1] = float("-inf")
    top = topk_teacher(logits(9, 3, 6), 2, 1.0)
    labels = torch.tensor([1, -100, -100])
    per = sparse_kd_loss_reference(zs, top, 1.0, labels, reduction="none")
    assert per[1].item() == 0.0 and per[2].item() == 0.0 and per[0].item() > 0
    sparse_kd_loss_reference(zs, top, 1.0, labels).backward()
    assert torch.isfinite(zs.grad).all() and zs.grad[1:].abs().max().item() == 0.0
    all_ignored = sparse_kd_loss_reference(zs, top, 1.0, torch.full((3,), -100))
    assert all_ignored.item() == 0.0


def test_low_precision_inputs_give_float32():
    zs = logits(10, 3, 7).to(torch.bfloat16)
    got = sparse_kd_loss_reference(zs, topk_teacher(logits(11, 3, 7).float(), 3, 2.0), 2.0)
    want = sparse_kd_loss_reference(zs.double(), topk_teacher(logits(11, 3, 7), 3, 2.0), 2.0)
    assert got.dtype == torch.float32 and got.item() == pytest.approx(want.item(), rel=1e-5)


def test_public_op_and_exports():
    zs, zt = logits(12, 3, 7), logits(13, 3, 7)
    top = K.topk_teacher(zt, 3, 1.0)
    assert isinstance(top, K.TopKTeacher)
    assert K.rescale_topk(top, 2.0).temperature == 2.0
    got = K.sparse_kd_loss(zs, top, 1.0)  # auto on CPU: the reference
    assert K.last_impls()["sparse_kd_loss"] == "reference"
    assert torch.equal(got, sparse_kd_loss_reference(zs, top, 1.0))


def test_errors_say_what_is_wrong():
    zs, zt = logits(14, 3, 6), logits(15, 3, 6)
    top = topk_teacher(zt, 2)
    with pytest.raises(KdkitError, match=r"k must be in \[1, C=6\]"):
        topk_teacher(zt, 7)
    with pytest.raises(KdkitError, match=r"k must be in \[1, C=6\]"):
        topk_teacher(zt, 0)
    big = TopKTeacher(torch.zeros(3, 9, dtype=torch.int32), torch.zeros(3, 9), torch.zeros(3), 1.0)
    with pytest.raises(KdkitError, match=r"k=9 .* C=6"):
        sparse_kd_loss_reference(zs, big, 1.0)
    with pytest.raises(KdkitError, match=r"labels must be class ids in \[0, 6\)"):
        sparse_kd_loss_reference(zs, top, 1.0, torch.tensor([0, 6, -100]))
    with pytest.raises(KdkitError, match="repeat a class id"):
        sparse_kd_loss_reference(
            zs, top._replace(indices=torch.zeros(3, 2, dtype=torch.int32)), 1.0
        )
    with pytest.raises(KdkitError, match="outside that range"):
        sparse_kd_loss_reference(zs, top._replace(indices=top.indices - 10), 1.0)
    with pytest.raises(KdkitError, match="unknown reduction"):
        sparse_kd_loss_reference(zs, top, 1.0, reduction="batchmean")
    with pytest.raises(KdkitError, match="N=2 rows"):
        sparse_kd_loss_reference(zs[:2], top, 1.0)
    with pytest.raises(KdkitError, match="TopKTeacher"):
        sparse_kd_loss_reference(zs, (top.indices, top.logprobs), 1.0)
    with pytest.raises(KdkitError, match="temperature must be > 0"):
        sparse_kd_loss_reference(zs, top, 0.0)
    with pytest.raises(KdkitError, match="needs the number of classes"):
        rescale(top._replace(num_classes=None), 2.0)
    with pytest.raises(KdkitError, match="unknown tail rule"):
        rescale(top, 2.0, tail="uniform")


# ---------------------------------------------------------------------------- bench + traffic


def test_traffic_model_is_the_floor_at_priority_shapes():
    from kdkit.kernels.sparse_kd import traffic

    for c in (32000, 128256, 50257):
        for dtype in ("bf16", "fp32"):
            m = traffic.traffic({"n": 8192, "c": c, "k": 128}, dtype)
            side = (8 * 128 + 32) / (c * traffic.BYTES[dtype])
            assert m["units"] == pytest.approx(2.0 + side) and m["units"] <= m["budget"]
            assert m["rereads_from"] == "L2" and m["in_flight_mb"] <= 30.0
            assert m["units_grad_output_not_one"] == pytest.approx(4.0 + side)
    # a row pair larger than half the L2 re-reads from HBM: above the budget, and the model says so
    huge = traffic.traffic({"n": 8, "c": 1 << 24, "k": 8}, "fp32")
    assert huge["rereads_from"] == "HBM" and huge["units"] > huge["budget"]


def test_bench_op_is_registered_and_its_gate_passes():
    from kdkit.bench import load_ops
    from kdkit.bench.op import BenchOp
    from kdkit.bench.runner import run_bench

    base = load_ops()["sparse_kd_loss"]
    assert {"kdkit-triton", "reference", "torch-compile"} <= {p.name for p in base.providers}
    assert base.bytes_min({"n": 4, "c": 10, "k": 2}, torch.float32, "fwd+bwd") == 4 * 10 * 8 + 64
    op = BenchOp(
        **{
            **base.__dict__,
            "providers": [p for p in base.providers if p.name == "reference"],
            "shapes": {"quick": [{"n": 16, "c": 20, "k": 5}]},
        }
    )
    _, rows = run_bench([op], torch.device("cpu"), shapes="quick", quick=True, log=lambda m: None)
    assert rows and all(r["status"] == "ok" and r["grad_err"] < 1e-6 for r in rows), rows


@pytest.mark.skipif(not HAS_TRITON, reason="triton not importable")
def test_static_check_compiles_the_kernels_for_sm90_without_spills(tmp_path):
    """The launcher's GPU configuration, compiled for sm_90 on this CPU (a subprocess: the kernel
    tests' TRITON_INTERPRET=1 would turn the kernels into interpreted functions)."""
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_CACHE_DIR": str(tmp_path / "cache")}
    out = tmp_path / "static"
    cmd = [sys.executable, "-m", "kdkit", "bench", "--static", "--quick", "--ops", "sparse_kd"]
    proc = subprocess.run(
        [*cmd, "--out", str(out)], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads((out / "static.json").read_text())["rows"]
    assert {r["kernel"] for r in rows} == {"_sparse_kd_fwd_kernel", "_sparse_kd_bwd_kernel"}
    for r in rows:
        assert r["status"] == "ok" and r["registers"] > 0, r
        assert r["spill_store_bytes"] == 0 and r["spill_load_bytes"] == 0, r
        assert r["within_budget"] and r["max_load_bytes"] == 16 and r["max_store_bytes"] == 16, r
