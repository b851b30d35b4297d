"""DIST's T² convention: on by default (the authors' code), off on request."""

import pytest
import torch

from kdkit.api import BuildContext, ModelOutput
from kdkit.kernels import dist_loss
from kdkit.plugins.methods.dist import DIST, DISTOptions
from kdkit.testing import TinyTask, tiny_batch


def test_t2_scaling_multiplies_the_relation_terms():
    torch.manual_seed(0)
    zs, zt = torch.randn(8, 5), torch.randn(8, 5)
    batch = tiny_batch(6)
    ctx = BuildContext(task=TinyTask())
    on = DIST(DISTOptions(temperature=2.0), ctx)(ModelOutput(zs), ModelOutput(zt), batch)["dist"]
    off = DIST(DISTOptions(temperature=2.0, t2_scaling=False), ctx)(
        ModelOutput(zs), ModelOutput(zt), batch
    )["dist"]
    raw = dist_loss(zs, zt, temperature=2.0)
    assert off.item() == pytest.approx(raw.item(), rel=1e-6)
    assert on.item() == pytest.approx(4.0 * raw.item(), rel=1e-6)
