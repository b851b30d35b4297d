"""Implementation choice: precedence, fallback, errors, records."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import kdkit.kernels as K
from kdkit.errors import KdkitError
from kdkit.kernels import dispatch


def test_import_does_not_import_triton():
    code = "import sys, kdkit.kernels; print('triton' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_auto_on_cpu_runs_reference_and_records_it():
    s, t = torch.randn(4, 5), torch.randn(4, 5)
    K.kd_loss(s, t)
    K.dist_loss(s, t)
    K.infonce_loss(s, t)
    K.ckd_loss(torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 5), torch.ones(1, 3), window=1)
    assert K.last_impls() == {
        "kd_loss": "reference",
        "dist_loss": "reference",
        "infonce_loss": "reference",
        "ckd_loss": "reference",
    }


def test_precedence(monkeypatch):
    assert dispatch.requested_impl(None) == "auto"
    K.set_default_impl("reference")
    assert dispatch.requested_impl(None) == "reference"
    monkeypatch.setenv(dispatch.ENV_VAR, "triton")
    assert dispatch.requested_impl(None) == "triton"
    assert dispatch.requested_impl("auto") == "auto"


def test_unknown_impl_is_a_user_error(monkeypatch):
    with pytest.raises(KdkitError, match="unknown kernel implementation"):
        K.kd_loss(torch.randn(2, 3), torch.randn(2, 3), impl="cuda")
    with pytest.raises(KdkitError, match="kernels.impl"):
        K.set_default_impl("fast")
    monkeypatch.setenv(dispatch.ENV_VAR, "nope")
    with pytest.raises(KdkitError, match=dispatch.ENV_VAR):
        K.kd_loss(torch.randn(2, 3), torch.randn(2, 3))


def test_explicit_triton_that_cannot_run_says_why(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(K.KernelUnavailableError) as info:
        K.kd_loss(torch.randn(2, 3), torch.randn(2, 3), impl="triton")
    msg = str(info.value)
    assert "not on a CUDA device" in msg and "fix:" in msg and "TRITON_INTERPRET=1" in msg


def test_explicit_triton_rejects_float64():
    with pytest.raises(K.KernelUnavailableError, match="float64"):
        K.kd_loss(
            torch.randn(2, 3, dtype=torch.float64),
            torch.randn(2, 3, dtype=torch.float64),
            impl="triton",
        )


@pytest.mark.skipif(not dispatch.interpreting(), reason="needs TRITON_INTERPRET=1")
def test_auto_never_picks_interpreter():
    K.kd_loss(torch.randn(2, 3), torch.randn(2, 3), impl="auto")
    assert K.last_impls()["kd_loss"] == "reference"


def test_alpha_below_one_needs_labels():
    with pytest.raises(KdkitError, match="needs labels"):
        K.kd_loss(torch.randn(2, 3), torch.randn(2, 3), alpha=0.5)


def test_dist_warns_with_two_classes():
    with pytest.warns(UserWarning, match="2 classes"):
        K.dist_loss(torch.randn(4, 2), torch.randn(4, 2))
