"""Tests of the example plugin, written only with kdkit's public test kit."""

import pytest
import torch
from kdkit_logit_mse import plugin
from kdkit_logit_mse.plugin import LogitMSE, LogitMSEOptions

from kdkit.api import ModelOutput
from kdkit.testing import check_hookimpls, check_kd_method


def test_conformance_by_registered_name():
    # found through the entry point, exactly as `kdkit run` would find it
    report = check_kd_method("logit-mse", {"ce_weight": 0.5})
    assert set(report.terms) == {"logit_mse", "ce"}


def test_hookimpls_are_well_formed():
    assert check_hookimpls(plugin) == ["register_kd_methods"]


def test_value_by_hand(kdkit_tiny_batch):
    method = LogitMSE(LogitMSEOptions(center=False), context=None)
    zs = torch.tensor([[1.0, 2.0, 3.0]])
    zt = torch.tensor([[1.0, 0.0, 3.0]])
    terms = method(ModelOutput(zs), ModelOutput(zt), kdkit_tiny_batch)
    assert terms["logit_mse"].item() == pytest.approx(4.0 / 3.0)  # (0 + 4 + 0) / 3


def test_centering_ignores_a_constant_shift(kdkit_tiny_batch):
    method = LogitMSE(LogitMSEOptions(), context=None)
    zt = torch.tensor([[0.5, -1.0, 2.0]])
    terms = method(ModelOutput(zt + 7.0), ModelOutput(zt), kdkit_tiny_batch)
    assert terms["logit_mse"].item() == pytest.approx(0.0, abs=1e-6)
