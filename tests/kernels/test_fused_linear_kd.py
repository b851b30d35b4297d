"""fused_linear_kd: chunked (PyTorch and Triton row kernel) vs the materialising reference."""

from __future__ import annotations

import pytest
import torch

import kdkit.kernels as K
from kdkit.kernels.kd.fused_linear import fused_linear_kd_chunked, fused_linear_kd_reference
from tests.kernels.conftest import DEVICE, needs_triton
from tests.kernels.helpers import assert_close_grad, assert_close_loss, randn
from tests.kernels.test_memory import peak_bytes


def make(n=13, c=37, hs=8, ht=6, dtype="fp32", labelled=True, seed=0):
    h_s, w_s, b_s = (
        randn(seed, n, hs, dtype=dtype),
        randn(seed + 1, c, hs, dtype=dtype),
        randn(seed + 2, c, dtype=dtype),
    )
    h_t, w_t = randn(seed + 3, n, ht, dtype=dtype), randn(seed + 4, c, ht, dtype=dtype)
    y = None
    if labelled:
        y = torch.randint(0, c, (n,), generator=torch.Generator().manual_seed(seed)).to(DEVICE)
        y[::4] = -100
    return (h_s, w_s, b_s), (h_t, w_t), y


def compare(
    use_triton, dtype="fp32", chunk=4, alpha=0.4, soft="kl", temperature=2.0, masked=False, go=1.5
):
    (h_s, w_s, b_s), (h_t, w_t), y = make(dtype=dtype, labelled=alpha != 1.0)
    row_mask = None
    if masked:
        row_mask = torch.ones(h_s.shape[0], dtype=torch.bool, device=DEVICE)
        row_mask[::3] = False
    kw = dict(temperature=temperature, alpha=alpha, soft=soft, row_mask=row_mask)
    mine = [t.detach().clone().requires_grad_() for t in (h_s, w_s, b_s)]
    ref = [t.detach().double().requires_grad_() for t in (h_s, w_s, b_s)]
    got = fused_linear_kd_chunked(
        mine[0],
        mine[1],
        h_t,
        w_t,
        y,
        student_bias=mine[2],
        chunk_rows=chunk,
        use_triton=use_triton,
        **kw,
    )
    want = fused_linear_kd_reference(
        ref[0], ref[1], h_t.double(), w_t.double(), y, student_bias=ref[2], **kw
    )
    # the logits themselves are rounded to the storage dtype in the chunked path
    rtol = 2e-5 if dtype == "fp32" else 3e-2
    assert_close_loss(got, want, dtype, rtol)
    (go * got).backward()
    (go * want).backward()
    for a, b in zip(mine, ref):
        assert_close_grad(a.grad, b.grad, dtype, 2e-5 if dtype == "fp32" else 6e-2)


@pytest.mark.parametrize("chunk", [1, 4, 13, 100])
@pytest.mark.parametrize("soft", ["kl", "ce"])
def test_chunked_torch_matches_reference(chunk, soft):
    compare(False, chunk=chunk, soft=soft, masked=True)


def test_chunked_torch_alpha_one_without_labels():
    compare(False, alpha=1.0, temperature=4.0)


@needs_triton
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_chunked_triton_matches_reference(dtype):
    compare(True, dtype=dtype, masked=True)


@needs_triton
def test_public_op_dispatch_and_frozen_teacher():
    (h_s, w_s, _), (h_t, w_t), y = make()
    w_s.requires_grad_()
    w_t.requires_grad_()
    loss = K.fused_linear_kd(
        h_s, w_s, h_t, w_t, y, alpha=0.5, temperature=2.0, impl="triton", chunk_rows=5
    )
    loss.backward()
    assert K.last_impls()["fused_linear_kd"] == "triton"
    assert w_t.grad is None and w_s.grad is not None
    ref = K.fused_linear_kd(
        h_s, w_s.detach(), h_t, w_t.detach(), y, alpha=0.5, temperature=2.0, impl="reference"
    )
    assert abs(loss.item() - ref.item()) < 1e-5


@pytest.mark.skipif(DEVICE != "cpu", reason="CPU peak-memory measurement")
def test_chunked_never_holds_the_full_logits():
    n, c, h = 512, 2048, 16
    g = torch.Generator().manual_seed(0)
    h_s = torch.randn(n, h, generator=g).requires_grad_()
    w_s = torch.randn(c, h, generator=g).requires_grad_()
    h_t, w_t = torch.randn(n, h, generator=g), torch.randn(c, h, generator=g)
    logits = n * c * 4  # one [N, C] fp32 matrix: 4 MiB
    full = peak_bytes(
        lambda: fused_linear_kd_reference(h_s, w_s, h_t, w_t, temperature=2.0).backward()
    )
    chunked = peak_bytes(
        lambda: fused_linear_kd_chunked(
            h_s, w_s, h_t, w_t, temperature=2.0, chunk_rows=8
        ).backward()
    )
    assert full >= 2 * logits
    assert chunked < logits / 4, (chunked, logits)  # temporaries scale with the chunk, not N
