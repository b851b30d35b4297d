"""Losses the core and plugins share (the heavy distillation maths lives in ``kdkit.kernels``).

* :func:`cross_entropy` — the hard-label CE of fine-tuning: the ``ft`` method's loss and the loss
  ``kdkit teach`` trains teachers with, so the two cannot drift apart.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdkit.api import IGNORE_INDEX


def cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Mean CE over labelled rows (``labels != IGNORE_INDEX``); 0 (with a graph) if there are none.

    ``logits`` ``[B, C]``, ``labels`` ``[B]``. A batch with no labelled row (semi-supervised data,
    a padded last shard) gives a zero loss whose gradient is zero, never NaN.
    """
    labels = labels.to(logits.device)
    labelled = labels != IGNORE_INDEX
    safe = torch.where(labelled, labels, torch.zeros_like(labels))
    per_row = F.cross_entropy(
        logits.float(), safe, reduction="none", label_smoothing=label_smoothing
    )
    return (per_row * labelled).sum() / labelled.sum().clamp_min(1)
