"""Small hand-made inputs for method tests: model infos, outputs and batches."""

from __future__ import annotations

import torch

from kdkit.api import Batch, BuildContext, Encoded, ModelInfo, ModelOutput
from kdkit.testing import TinyTask


def info(layers: int = 2, hidden: int = 4, name: str = "m") -> ModelInfo:
    """A ModelInfo of the given depth and width."""
    return ModelInfo(name, "transformer", layers, hidden, 0)


def context(student=None, teacher=None, task=None) -> BuildContext:
    """A build context for a method between ``student`` and ``teacher`` infos."""
    return BuildContext(
        task=task or TinyTask(),
        student=student or info(),
        teacher=teacher or info(),
        kernel_impl="reference",
    )


def output(logits, **kw) -> ModelOutput:
    """A ModelOutput from a nested list or tensor of logits (float64 for exact comparisons)."""
    return ModelOutput(logits=torch.as_tensor(logits, dtype=torch.float64), **kw)


def batch(labels, texts=None) -> Batch:
    """A batch with ``labels``; tokenisations are placeholders the logit methods never read."""
    labels = torch.as_tensor(labels)
    n = len(labels)
    dummy = Encoded(
        torch.zeros(n, 1, dtype=torch.long),
        torch.ones(n, 1, dtype=torch.long),
        torch.zeros(n, 1, 2, dtype=torch.long),
    )
    return Batch(texts or [""] * n, labels, torch.arange(n), dummy)
