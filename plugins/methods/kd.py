"""Built-in methods ``kd`` and ``kd-study``: temperature-scaled knowledge distillation.

Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network" (2015)::

    loss = alpha · [T² ·] soft(z_s, z_t; T) + (1 − alpha) · CE(z_s, y)
    soft = KL(p_t^T ‖ p_s^T)      (soft: kl)     or     CE(z_s/T, p_t^T)   (soft: ce)

with ``p^T = softmax(z / T)``. Conventions, all explicit options:

* ``alpha`` weighs the soft term, ``1 − alpha`` the label CE (at T = 1); ``alpha: 1`` drops labels;
* ``t2_scaling`` multiplies the soft term by ``T²`` so its gradient keeps the scale of the CE's;
* ``soft: ce`` differs from ``kl`` by the teacher's entropy, a constant: same gradient.

``kd`` defaults to the standard form (KL, T = 4, alpha = 0.5, T² on). ``kd-study`` is the same
method with the defaults of the empirical study kdkit reproduces (Wang et al. 2025): soft CE,
T = 10, no label term (alpha = 1), no T². Both accept every option.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kdkit.api import Batch, BuildContext, KDMethod, LossTerms, ModelOutput, Needs, Requirements
from kdkit.hookspecs import hookimpl
from kdkit.plugins.methods.common import LogitOptions, logit_terms


class KDOptions(LogitOptions):
    """Options of ``kd`` (Hinton's standard form)."""

    alpha: float = Field(
        0.5, ge=0, le=1, description="weight of the soft term; 1-alpha weighs label CE"
    )
    temperature: float = Field(4.0, gt=0, description="softmax temperature T")


class KDStudyOptions(LogitOptions):
    """Options of ``kd-study``: the study's variant, CE(z_s/T, p_t^T) with T = 10 and nothing else."""

    alpha: float = Field(
        1.0, ge=0, le=1, description="weight of the soft term; 1-alpha weighs label CE"
    )
    temperature: float = Field(10.0, gt=0, description="softmax temperature T")
    soft: Literal["kl", "ce"] = Field("ce", description="soft term: KL divergence or soft CE")
    t2_scaling: bool = Field(False, description="multiply the soft term by T^2")


class KD(KDMethod):
    """Logit distillation: returns ``"kd"`` (alpha-weighted soft term) and ``"ce"`` (if alpha < 1)."""

    def __init__(self, options: LogitOptions, context: BuildContext) -> None:
        super().__init__()
        self.options = options
        self.requirements = Requirements(student=Needs(), teacher=Needs())

    def forward(self, student: ModelOutput, teacher: ModelOutput | None, batch: Batch) -> LossTerms:
        """The weighted ``kd`` and ``ce`` terms (see the module docstring)."""
        return logit_terms(self.options, student, teacher, batch)


@hookimpl
def register_kd_methods(register):
    """Register ``kd`` and its study preset ``kd-study``."""
    register(
        "kd",
        KD,
        config=KDOptions,
        description="Hinton KD: alpha*T^2*KL(p_t^T||p_s^T) + (1-alpha)*CE (Hinton et al. 2015)",
    )
    register(
        "kd-study",
        KD,
        config=KDStudyOptions,
        description="the study's KD preset: CE(z_s/T, p_t^T), T=10, no label term, no T^2",
    )
