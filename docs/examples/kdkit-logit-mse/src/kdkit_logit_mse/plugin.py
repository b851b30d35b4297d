"""Logit matching (Ba & Caruana, "Do Deep Nets Really Need to be Deep?", NeurIPS 2014).

loss = weight * mean_i ||z_s[i] - z_t[i]||^2 / C  +  ce_weight * CE(z_s, y)

Logits are centred per row first (``center: true``) so that the loss ignores the constant a
softmax ignores.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch.nn import functional as F

from kdkit import hookimpl
from kdkit.api import KDMethod, Needs, Options, Requirements


class LogitMSEOptions(Options):
    """Options of ``logit-mse`` (unknown keys are rejected by kdkit.api.Options)."""

    weight: float = Field(1.0, ge=0, description="weight of the logit-matching term")
    ce_weight: float = Field(0.0, ge=0, description="weight of cross-entropy on the labels")
    center: bool = Field(True, description="subtract each row's mean logit first")


class LogitMSE(KDMethod):
    """Mean squared error between student and teacher logits."""

    def __init__(self, options: LogitMSEOptions, context) -> None:
        super().__init__()
        self.options = options
        self.requirements = Requirements(student=Needs(), teacher=Needs())

    def forward(self, student, teacher, batch) -> dict[str, torch.Tensor]:
        zs = student.logits.float()  # [B, C]
        zt = teacher.logits.to(zs.dtype)  # [B, C], detached: the teacher is frozen
        if self.options.center:
            zs = zs - zs.mean(dim=-1, keepdim=True)
            zt = zt - zt.mean(dim=-1, keepdim=True)
        terms = {"logit_mse": self.options.weight * F.mse_loss(zs, zt)}
        if self.options.ce_weight > 0:
            terms["ce"] = self.options.ce_weight * F.cross_entropy(student.logits, batch.labels)
        return terms


@hookimpl
def register_kd_methods(register):
    register(
        "logit-mse",
        LogitMSE,
        config=LogitMSEOptions,
        description="logit matching, MSE between centred logits (Ba & Caruana 2014)",
    )
