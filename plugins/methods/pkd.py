"""Built-in method ``pkd``: Patient Knowledge Distillation.

Sun, Cheng, Gan, Liu, "Patient Knowledge Distillation for BERT Model Compression" (EMNLP 2019)::

    loss = alpha · [T² ·] KD(z_s, z_t; T) + (1 − alpha) · CE(z_s, y)
         + beta · mean_l ‖ h_s^l/‖h_s^l‖ − W_l h_t^{m(l)}/‖W_l h_t^{m(l)}‖ ‖²

over the pooled feature (``<s>``/[CLS] state; a GRU's final states) of matched layers. The layer
map ``m`` is :func:`kdkit.features.map_layers` — ``uniform`` with the last pair excluded gives the
study's ``m(l) = (l+1)·12/L_s`` for a 12-layer teacher and generalises to any depth. ``W_l`` is a
trainable projection per matched layer, owned by the method. By default (``project: student``)
it maps the student's feature to the teacher's width, so the target keeps the teacher's geometry.
The study writes the projection on the teacher side (``project: teacher``: ``W_l h_t``), but then
both sides of the distance are trainable and the loss has a trivial minimum — ``W_l`` and the
student map everything to one direction. kdkit measured exactly that collapse on the default
offline task (1-layer student, β = 10: validation top-1 9.6 % on all three seeds, every row the
same class, vs 38.5 % for FT; docs/methods.md), hence the default. The normalised squared distance is summed over features (the
paper's form, in [0, 4]), see :func:`kdkit.kernels.relations.normalized_mse`.

Defaults follow the study: alpha = 1, beta = 10, T = 10, KL with T².
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn

from kdkit.api import Batch, BuildContext, KDMethod, LossTerms, ModelOutput, Needs, Requirements
from kdkit.errors import KdkitError
from kdkit.hookspecs import hookimpl
from kdkit.kernels.relations import normalized_mse
from kdkit.plugins.methods.common import LayerOptions, LogitOptions, layer_pairs, logit_terms


class PKDOptions(LogitOptions, LayerOptions):
    """Options of ``pkd``."""

    alpha: float = Field(
        1.0, ge=0, le=1, description="weight of the soft KD term; 1-alpha weighs label CE"
    )
    temperature: float = Field(10.0, gt=0, description="softmax temperature T of the KD term")
    beta: float = Field(10.0, ge=0, description="weight of the patient (feature) loss")
    exclude_last: bool = Field(True, description="drop the last student layer's pair (PKD)")
    project: Literal["teacher", "student", "none"] = Field(
        "student",
        description="which side the trainable projection W_l maps: student -> teacher width "
        "(default), teacher -> student width (the study's form; can collapse), or none "
        "(equal widths only)",
    )


class PKD(KDMethod):
    """Patient KD; terms ``"kd"``, ``"ce"`` (if alpha < 1) and ``"pkd"``."""

    def __init__(self, options: PKDOptions, context: BuildContext) -> None:
        super().__init__()
        self.options = options
        self.pairs = layer_pairs(options, context, "pkd")
        hs, ht = context.student.hidden_size, context.teacher.hidden_size
        if options.project == "none" and hs != ht:
            raise KdkitError(
                f"project: none needs equal widths, but the student's is {hs} and the teacher's {ht}",
                where="method (pkd).project",
                fix="use project: teacher or project: student",
            )
        make = {
            "teacher": lambda: nn.Linear(ht, hs),
            "student": lambda: nn.Linear(hs, ht),
            "none": nn.Identity,
        }[options.project]
        self.projections = nn.ModuleList(make() for _ in self.pairs)
        self.requirements = Requirements(
            student=Needs(pooled_layers=tuple(sorted({s for s, _ in self.pairs}))),
            teacher=Needs(pooled_layers=tuple(sorted({t for _, t in self.pairs}))),
        )

    def forward(self, student: ModelOutput, teacher: ModelOutput | None, batch: Batch) -> LossTerms:
        """Logit terms plus ``beta`` times the mean normalised MSE over matched layers."""
        terms = logit_terms(self.options, student, teacher, batch)
        total = 0.0
        for (ls, lt), proj in zip(self.pairs, self.projections):
            s = student.pooled[ls]  # [B, Hs]
            t = teacher.pooled[lt].to(s.dtype)  # [B, Ht], detached
            if self.options.project == "student":
                s = proj(s)  # [B, Ht]
            else:
                t = proj(t)  # [B, Hs]
            total = total + normalized_mse(s, t)
        terms["pkd"] = self.options.beta * total / len(self.pairs)
        return terms


@hookimpl
def register_kd_methods(register):
    """Register ``pkd``."""
    register(
        "pkd",
        PKD,
        config=PKDOptions,
        description="patient KD: normalised MSE of pooled features of matched layers + KD (Sun et al. 2019)",
    )
