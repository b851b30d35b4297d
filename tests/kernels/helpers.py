"""Shared helpers of the kernel tests: inputs, float64 references, tolerances."""

from __future__ import annotations

import torch

from tests.kernels.conftest import DEVICE

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
#: (loss rtol, gradient tolerance relative to the largest gradient entry) per storage dtype.
#: Inputs are quantised to the storage dtype first and the reference sees the same values, so
#: only the kernel's fp32 maths and the rounding of the stored gradient remain.
TOL = {"fp32": (2e-5, 2e-5), "bf16": (2e-5, 1.6e-2), "fp16": (2e-5, 2e-3)}


def randn(seed: int, *shape: int, scale: float = 1.0, dtype: str = "fp32") -> torch.Tensor:
    """Seeded normal tensor quantised to ``dtype``, on the test device."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float64) * scale
    return x.to(DTYPES[dtype]).to(DEVICE)


def pair(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x as a leaf requiring grad, its float64 copy requiring grad)``."""
    return x.detach().clone().requires_grad_(), x.detach().double().requires_grad_()


def assert_close_loss(
    got: torch.Tensor, want: torch.Tensor, dtype: str, rtol: float | None = None
) -> None:
    rtol = rtol or TOL[dtype][0]
    g, w = got.detach().item(), want.detach().item()
    assert abs(g - w) <= rtol * max(1.0, abs(w)), f"loss {g} vs reference {w} ({dtype})"


def assert_close_grad(
    got: torch.Tensor, want: torch.Tensor, dtype: str, tol: float | None = None
) -> None:
    tol = tol or TOL[dtype][1]
    assert got is not None, "no gradient"
    assert got.dtype == DTYPES[dtype], f"gradient dtype {got.dtype}, expected {DTYPES[dtype]}"
    err = (got.double() - want).abs().max().item()
    scale = want.abs().max().item()
    assert err <= tol * max(scale, 1e-6) + 1e-7, f"gradient error {err} vs scale {scale} ({dtype})"
