"""Triton infonce_loss vs the float64 reference."""

from __future__ import annotations

import pytest

import kdkit.kernels as K
from kdkit.kernels.infonce.reference import infonce_loss_reference
from tests.kernels.conftest import DEVICE, needs_triton
from tests.kernels.helpers import assert_close_grad, assert_close_loss, pair, randn

pytestmark = needs_triton


def run_case(b, d, *, dtype="fp32", tau=0.07, normalize=True, teacher_grad=True, go=0.6, seed=0):
    from kdkit.kernels.infonce.triton import infonce_loss_triton

    s, s64 = pair(randn(seed, b, d, dtype=dtype))
    t, t64 = pair(randn(seed + 1, b, d, dtype=dtype))
    t.requires_grad_(teacher_grad)
    t64.requires_grad_(teacher_grad)
    got = infonce_loss_triton(s, t, temperature=tau, normalize=normalize)
    want = infonce_loss_reference(s64, t64, temperature=tau, normalize=normalize)
    # On a GPU, bf16/fp16 tiles go through tensor cores: the normalised rows are rounded to the
    # storage dtype before the products (the interpreter computes in fp32).
    lowp = DEVICE == "cuda" and dtype != "fp32"
    lt, gt = (2e-2, 5e-2) if lowp else (None, None)
    assert_close_loss(got, want, dtype, lt)
    (got * go).backward()
    (want * go).backward()
    assert_close_grad(s.grad, s64.grad, dtype, gt)
    if teacher_grad:
        assert_close_grad(t.grad, t64.grad, dtype, gt)
    else:
        assert t.grad is None


# B not a multiple of the 16-row tiles, B smaller than a tile, d not a power of two, d > BD.
@pytest.mark.parametrize("b,d", [(1, 4), (7, 5), (16, 16), (37, 20), (50, 100)])
@pytest.mark.parametrize("teacher_grad", [True, False])
def test_shapes(b, d, teacher_grad):
    run_case(b, d, teacher_grad=teacher_grad)


@pytest.mark.parametrize("tau", [0.05, 0.07, 0.5, 1.0, 4.0])
def test_temperatures(tau):
    run_case(23, 12, tau=tau)


def test_unnormalised():
    run_case(21, 9, normalize=False, tau=2.0)


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16"])
def test_dtypes(dtype):
    run_case(19, 24, dtype=dtype)


def test_public_op_dispatches_to_triton():
    s, t = randn(3, 9, 8), randn(4, 9, 8)
    got = K.infonce_loss(s, t, impl="triton")
    assert K.last_impls()["infonce_loss"] == "triton"
    want = infonce_loss_reference(s.double(), t.double())
    assert abs(got.item() - want.item()) < 1e-5


# ---------------------------------------------------------------- backward: one recompute + GEMMs


def test_chunk_rule_bounds_ds():
    from kdkit.kernels.infonce.triton import CHUNK_ELEMS, chunk_rows

    assert chunk_rows(8192, 128) == 512 and chunk_rows(32768, 128) == 512
    assert chunk_rows(5, 16) == 5 and chunk_rows(384, 16) == 16
    for b in (1, 100, 1024, 8192, 32768, 1 << 17):
        rows = chunk_rows(b, 128)
        assert 1 <= rows <= b and (rows % 128 == 0 or rows == b)
        assert rows * b <= max(CHUNK_ELEMS, 128 * b)


@pytest.mark.parametrize("chunk_elems", [1, 16 * 40, 1 << 24])
def test_result_does_not_depend_on_the_chunk(monkeypatch, chunk_elems):
    """Chunks of 16 rows (several, the last partial) up to one chunk: the same gradients."""
    from kdkit.kernels.infonce import triton as it

    monkeypatch.setattr(it, "CHUNK_ELEMS", chunk_elems)
    monkeypatch.setattr(
        it, "chunk_rows", lambda b, bm: min(max(bm, chunk_elems // b // bm * bm), b)
    )
    run_case(40, 12, tau=0.1)


def test_backward_recomputes_each_tile_once(monkeypatch):
    """The backward launches one dS kernel per chunk over every (row block, column block) tile
    of that chunk: B^2 similarity entries in all, once (8 B^2 d FLOPs with the forward)."""
    from kdkit.kernels.infonce import triton as it

    tiles = []
    real = it._infonce_ds_kernel

    class Spy:
        def __getitem__(self, grid):
            tiles.append(grid)
            return real[grid]

    monkeypatch.setattr(it, "_infonce_ds_kernel", Spy())
    b = 50
    s = randn(1, b, 8).requires_grad_()
    t = randn(2, b, 8).requires_grad_()
    it.infonce_loss_triton(s, t).backward()
    bm = it._config(8, 0)[0]
    ch = it.chunk_rows(b, bm)
    assert len(tiles) == -(-b // ch)
    covered = sum(g[0] * g[1] for g in tiles) * bm * bm
    assert b * b <= covered < (b + bm) * (b + bm)


def test_student_equal_teacher_tiny_loss_and_gradient():
    """s == t: the loss is tiny and accurate; the diagonal -q term keeps the gradient exact."""
    x = randn(5, 24, 16, scale=3.0)
    run_case_tensors(x, x.clone(), tau=0.05)


def test_extreme_temperature_and_scale():
    run_case_tensors(randn(6, 33, 20, scale=1e3), randn(7, 33, 20, scale=1e-3), tau=0.01)
    run_case_tensors(randn(8, 33, 20), randn(9, 33, 20), tau=100.0, normalize=False)


def run_case_tensors(s0, t0, *, tau, normalize=True, go=0.9):
    from kdkit.kernels.infonce.triton import infonce_loss_triton

    s, s64 = pair(s0)
    t, t64 = pair(t0)
    got = infonce_loss_triton(s, t, temperature=tau, normalize=normalize)
    want = infonce_loss_reference(s64, t64, temperature=tau, normalize=normalize)
    assert_close_loss(got, want, "fp32", 1e-4)
    (got * go).backward()
    (want * go).backward()
    assert_close_grad(s.grad, s64.grad, "fp32", 1e-4)
    assert_close_grad(t.grad, t64.grad, "fp32", 1e-4)


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_low_precision_large_grad_output(dtype):
    """grad_output multiplies the fp32 GEMM results before the one rounding to the dtype."""
    run_case(37, 20, dtype=dtype, go=4096.0)
