"""Kernel tests run the Triton kernels in the CPU interpreter.

``TRITON_INTERPRET`` must be set before any ``@triton.jit`` decorator runs, i.e. before
``kdkit.kernels.*.triton`` is imported (the dispatcher imports those lazily).
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch

from kdkit.kernels import dispatch

#: Whether the Triton tests can run here.
HAS_TRITON = dispatch.triton_import_error() is None
#: Run the kernel tests on CUDA when asked (benchmarks/gpu_check.sh sets it).
DEVICE = "cuda" if os.environ.get("KDKIT_TEST_DEVICE") == "cuda" else "cpu"

needs_triton = pytest.mark.skipif(
    not HAS_TRITON or (DEVICE == "cpu" and not dispatch.interpreting()),
    reason="triton not importable (or neither CUDA nor TRITON_INTERPRET=1)",
)


@pytest.fixture(autouse=True)
def _clean_dispatch(monkeypatch):
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    dispatch.set_default_impl(None)
    dispatch.reset_last_impls()
    torch.manual_seed(0)
    yield
    dispatch.set_default_impl(None)
