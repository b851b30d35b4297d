"""Built-in method ``dist``: DIST, knowledge distillation from a stronger teacher.

Huang, You, Wang, Qian, Xu, "Knowledge Distillation from A Stronger Teacher" (NeurIPS 2022)::

    loss = [T² ·] ( beta  · (1 − mean_i ρ(p_s^T[i, :], p_t^T[i, :]))     inter-class (per example)
                  + gamma · (1 − mean_c ρ(p_s^T[:, c], p_t^T[:, c])) )   intra-class (per class)
         + ce_weight · CE(z_s, y)

with ``p^T = softmax(z / T)`` and ρ the Pearson correlation. The ``T²`` factor (``t2_scaling``,
on by default) is what the DIST authors' released code applies; the paper's formula omits it.
At the default T = 1 the two agree. Defaults follow the study (beta = gamma = 1, T = 1, no label
term; DIST's paper adds CE with weight 1).

With two classes the per-example vectors have two entries, so ρ is ±1 and carries no gradient:
the inter-class term is constant and DIST reduces to its intra-class term (a warning says so).

Under DDP/FSDP both relation terms are computed on the global batch (every rank's logits,
gathered with gradients), so the intra-class correlations are the one-process ones.
"""

from __future__ import annotations

import warnings

from pydantic import Field

from kdkit.api import (
    Batch,
    BuildContext,
    KDMethod,
    LossTerms,
    ModelOutput,
    Needs,
    Options,
    Requirements,
)
from kdkit.engine.distributed import global_rows
from kdkit.hookspecs import hookimpl
from kdkit.kernels import dist_loss
from kdkit.losses import cross_entropy


class DISTOptions(Options):
    """Options of ``dist``."""

    beta: float = Field(1.0, ge=0, description="weight of the inter-class (per example) relation")
    gamma: float = Field(1.0, ge=0, description="weight of the intra-class (per class) relation")
    temperature: float = Field(1.0, gt=0, description="softmax temperature T")
    ce_weight: float = Field(0.0, ge=0, description="weight of label CE (DIST's paper: 1)")
    t2_scaling: bool = Field(True, description="multiply the relation terms by T² (authors' code)")


class DIST(KDMethod):
    """Pearson-correlation relations of the class probabilities; terms ``"dist"`` and ``"ce"``."""

    def __init__(self, options: DISTOptions, context: BuildContext) -> None:
        super().__init__()
        self.options = options
        self.requirements = Requirements(student=Needs(), teacher=Needs())
        labels = getattr(context.task, "labels", None)
        if labels is not None and len(labels) == 2 and options.beta > 0:
            warnings.warn(
                "dist: with two classes the inter-class (per-example) Pearson term is always ±1 "
                "and carries no gradient; DIST reduces to its intra-class term (gamma). "
                "Set beta: 0 to silence this.",
                UserWarning,
                stacklevel=2,
            )

    def forward(self, student: ModelOutput, teacher: ModelOutput | None, batch: Batch) -> LossTerms:
        """``{"dist": DIST loss, "ce": ce_weight·CE}`` (``ce`` only with a positive weight)."""
        zs = student.logits  # [B, C]
        zt = teacher.logits.to(zs.dtype)  # [B, C], detached
        o = self.options
        scale = o.temperature**2 if o.t2_scaling else 1.0
        # per-class correlations need every row of the global batch (several ranks: gathered with
        # gradients); the per-example term's mean over the global batch is the one-process one too
        relation = dist_loss(
            global_rows(zs), global_rows(zt), beta=o.beta, gamma=o.gamma, temperature=o.temperature
        )
        terms = {"dist": scale * relation}
        if o.ce_weight > 0:
            terms["ce"] = o.ce_weight * cross_entropy(zs, batch.labels)
        return terms


@hookimpl
def register_kd_methods(register):
    """Register ``dist``."""
    register(
        "dist",
        DIST,
        config=DISTOptions,
        description="DIST: Pearson inter-/intra-class relations of probabilities (Huang et al. 2022)",
    )
