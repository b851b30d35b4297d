"""Built-in method ``rkd``: Relational Knowledge Distillation.

Park, Kim, Lu, Cho, "Relational Knowledge Distillation" (CVPR 2019). On the features the two
heads read (``e_s`` ``[B, H_s]``, ``e_t`` ``[B, H_t]``)::

    loss = distance_weight · mean_{i≠j} huber(ψ_D(e_s)_ij − ψ_D(e_t)_ij)
         + angle_weight    · mean_{i,j,k distinct} huber(ψ_A(e_s)_ijk − ψ_A(e_t)_ijk)
         + alpha · [T² ·] KD + (1 − alpha) · CE

``ψ_D`` is the Euclidean distance divided by the batch's mean distance, ``ψ_A`` the cosine of the
angle at ``e_i``. Both are independent of the feature width (no projection) and of the scale of
the features. Defaults are the paper's classification weights (25 and 50); the batch must hold
at least 2 (distance) or 3 (angle) examples for the terms to be non-zero. Under DDP/FSDP the
relations are between all rows of the global batch (gathered with gradients), as on one process.
"""

from __future__ import annotations

from pydantic import Field

from kdkit.api import Batch, BuildContext, KDMethod, LossTerms, ModelOutput, Needs, Requirements
from kdkit.engine.distributed import global_rows
from kdkit.hookspecs import hookimpl
from kdkit.kernels.relations import rkd_angle_loss, rkd_distance_loss
from kdkit.plugins.methods.common import LogitOptions, logit_terms, output_feature, require_infos


class RKDOptions(LogitOptions):
    """Options of ``rkd`` (alpha defaults to 0: relations plus label CE)."""

    distance_weight: float = Field(25.0, ge=0, description="weight of the distance relation")
    angle_weight: float = Field(50.0, ge=0, description="weight of the angle relation")


class RKD(KDMethod):
    """Distance and angle relations between examples; terms ``"rkd_d"``, ``"rkd_a"``, ``"ce"``, ``"kd"``."""

    def __init__(self, options: RKDOptions, context: BuildContext) -> None:
        super().__init__()
        require_infos(context, "rkd")
        self.options = options
        self.requirements = Requirements(Needs(embedding=True), Needs(embedding=True))

    def forward(self, student: ModelOutput, teacher: ModelOutput | None, batch: Batch) -> LossTerms:
        """Logit terms plus the weighted RKD relations of the batch's head features."""
        terms = logit_terms(self.options, student, teacher, batch)
        s = output_feature(student, "student", "rkd")  # [B, Hs]
        t = output_feature(teacher, "teacher", "rkd").to(s.dtype)  # [B, Ht]
        # relations between ALL rows of the global batch (several ranks: gathered with gradients)
        s, t = global_rows(s), global_rows(t)
        if self.options.distance_weight > 0:
            terms["rkd_d"] = self.options.distance_weight * rkd_distance_loss(s, t)
        if self.options.angle_weight > 0:
            terms["rkd_a"] = self.options.angle_weight * rkd_angle_loss(s, t)
        return terms


@hookimpl
def register_kd_methods(register):
    """Register ``rkd``."""
    register(
        "rkd",
        RKD,
        config=RKDOptions,
        description="RKD: distance and angle relations between examples (Park et al. 2019)",
    )
