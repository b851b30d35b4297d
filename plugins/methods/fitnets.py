"""Built-in method ``fitnets``: hints through a regressor.

Romero, Ballas, Kahou, Chassang, Gatta, Bengio, "FitNets: Hints for Thin Deep Nets" (ICLR 2015)::

    loss = hint_weight · mean_l MSE(r_l(h_s^l), h_t^{m(l)}) + alpha · [T² ·] KD + (1 − alpha) · CE

``r_l`` is a trainable linear regressor per matched layer (student width -> teacher width), owned
by the method. Trained jointly with the task loss (FitNets' two-stage schedule is not
reproduced). ``features: pooled`` matches the pooled feature of each layer; ``features: tokens``
matches token states after pooling both tokenisations onto shared character spans
(:func:`kdkit.features.align_spans`), padding masked. MSE is a mean over elements
(:func:`kdkit.kernels.relations.hint_mse`), so it scales with the teacher's activations: tune
``hint_weight`` for teachers with large hidden states.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn

from kdkit.api import Batch, BuildContext, KDMethod, LossTerms, ModelOutput, Needs, Requirements
from kdkit.features import align_outputs
from kdkit.hookspecs import hookimpl
from kdkit.kernels.relations import hint_mse
from kdkit.plugins.methods.common import LayerOptions, LogitOptions, layer_pairs, logit_terms


class FitNetsOptions(LogitOptions, LayerOptions):
    """Options of ``fitnets`` (alpha defaults to 0: hints plus label CE)."""

    hint_weight: float = Field(1.0, ge=0, description="weight of the hint MSE")
    features: Literal["pooled", "tokens"] = Field(
        "pooled", description="match pooled features, or token states aligned by character spans"
    )


class FitNets(KDMethod):
    """Hint MSE through regressors; terms ``"hint"``, ``"ce"`` and ``"kd"`` (if alpha > 0)."""

    def __init__(self, options: FitNetsOptions, context: BuildContext) -> None:
        super().__init__()
        self.options = options
        self.pairs = layer_pairs(options, context, "fitnets")
        hs, ht = context.student.hidden_size, context.teacher.hidden_size
        self.regressors = nn.ModuleList(nn.Linear(hs, ht) for _ in self.pairs)
        s_layers = tuple(sorted({s for s, _ in self.pairs}))
        t_layers = tuple(sorted({t for _, t in self.pairs}))
        if options.features == "pooled":
            self.requirements = Requirements(
                Needs(pooled_layers=s_layers), Needs(pooled_layers=t_layers)
            )
        else:
            self.requirements = Requirements(
                Needs(hidden_layers=s_layers), Needs(hidden_layers=t_layers)
            )

    def forward(self, student: ModelOutput, teacher: ModelOutput | None, batch: Batch) -> LossTerms:
        """Logit terms plus ``hint_weight`` times the mean hint MSE over matched layers."""
        terms = logit_terms(self.options, student, teacher, batch)
        tokens = self.options.features == "tokens"
        align = align_outputs(student, teacher, "method (fitnets)") if tokens else None
        total = 0.0
        for (ls, lt), reg in zip(self.pairs, self.regressors):
            if align is None:
                s, t, mask = student.pooled[ls], teacher.pooled[lt], None  # [B, H]
            else:
                s = align.pool_student(student.hidden_states[ls])  # [B, T, Hs]
                t = align.pool_teacher(teacher.hidden_states[lt].to(s.dtype))  # [B, T, Ht]
                mask = align.span_mask  # [B, T]
            total = total + hint_mse(reg(s), t.to(s.dtype), mask)
        terms["hint"] = self.options.hint_weight * total / len(self.pairs)
        return terms


@hookimpl
def register_kd_methods(register):
    """Register ``fitnets``."""
    register(
        "fitnets",
        FitNets,
        config=FitNetsOptions,
        description="FitNets: MSE between regressed student and teacher features (Romero et al. 2015)",
    )
