"""The one hard-label CE shared by the ``ft`` method and ``kdkit teach`` (kdkit.losses)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdkit.api import IGNORE_INDEX, BuildContext, ModelOutput
from kdkit.discovery import load_plugins
from kdkit.engine.teach import CrossEntropy
from kdkit.losses import cross_entropy
from kdkit.testing import TinyTask, tiny_batch


def _ft():
    component = load_plugins(distributions={"kdkit"}).registry.get("kd_method", "ft")
    return component.build(component.options({}), BuildContext(task=TinyTask()))


def test_an_all_unlabelled_batch_gives_zero_not_nan_in_ft_and_teach():
    batch = tiny_batch(6)
    batch.labels = torch.full_like(batch.labels, IGNORE_INDEX)
    logits = torch.randn(6, 3, requires_grad=True)
    out = ModelOutput(logits=logits)
    for loss in (
        cross_entropy(logits, batch.labels),
        CrossEntropy()(out, None, batch)["ce"],
        _ft()(out, None, batch)["ce"],
    ):
        assert loss.item() == 0.0  # F.cross_entropy(..., ignore_index) gives NaN here
        (grad,) = torch.autograd.grad(loss, logits)
        assert torch.equal(grad, torch.zeros_like(logits))


def test_teach_and_ft_compute_the_same_mean_ce_over_labelled_rows():
    torch.manual_seed(0)
    batch = tiny_batch(8)
    batch.labels[[1, 4]] = IGNORE_INDEX
    logits = torch.randn(8, 3) * 3
    out = ModelOutput(logits=logits)
    teach = CrossEntropy()(out, None, batch)["ce"]
    assert torch.equal(teach, _ft()(out, None, batch)["ce"])
    keep = batch.labels != IGNORE_INDEX
    expected = F.cross_entropy(logits[keep], batch.labels[keep])  # mean over the 6 labelled rows
    torch.testing.assert_close(teach, expected, rtol=1e-6, atol=0)
    assert teach.item() > 0
