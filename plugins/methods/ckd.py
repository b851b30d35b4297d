"""Built-in method ``ckd``: Contextual Knowledge Distillation (contextual, not contrastive).

Park, Kim, Yang, "Distilling Linguistic Context for Language Model Compression" (EMNLP 2021)::

    loss = alpha · [T² ·] KD(z_s, z_t; T) + (1 − alpha) · CE(z_s, y) + beta · (WR + gamma · LTR)

* **Word relation** WR, per matched layer: for every token ``i`` and ``j, k`` within a window of
  ``W`` positions, the pairwise cosine distance ``1 − cos(h_i, h_j)`` and the triple-wise angle
  ``cos∠(h_j − h_i, h_k − h_i)``; MSE between student and teacher relations.
* **Layer-transforming relation** LTR, per token: the same distance and angle statistics across
  the matched layers.

Relations are width-independent, so no projection is needed and any architectures pair up.

**Alignment.** Teacher and student tokenise the code differently, so "token ``i``" is not the
same thing on both sides. kdkit never compares positions: both sides' token states are
mean-pooled onto the shared character spans of :func:`kdkit.features.align_spans` (the coarsest
segmentation whose boundaries both tokenisations respect), and the relations run over those
spans with a span mask (padding, special tokens and text seen by one side only are masked).

Defaults follow the study: alpha = 1, beta = 10, gamma = 10, T = 3, W = 10, batch 16. The heavy
maths is :func:`kdkit.kernels.ckd_loss`.
"""

from __future__ import annotations

from pydantic import Field

from kdkit.api import Batch, BuildContext, KDMethod, LossTerms, ModelOutput, Needs, Requirements
from kdkit.features import SpanAlignment, align_outputs, stack_layers
from kdkit.hookspecs import hookimpl
from kdkit.kernels import ckd_loss
from kdkit.plugins.methods.common import LayerOptions, LogitOptions, layer_pairs, logit_terms


class CKDOptions(LogitOptions, LayerOptions):
    """Options of ``ckd``."""

    alpha: float = Field(
        1.0, ge=0, le=1, description="weight of the soft KD term; 1-alpha weighs label CE"
    )
    temperature: float = Field(3.0, gt=0, description="softmax temperature T of the KD term")
    beta: float = Field(10.0, ge=0, description="weight of the contextual relations")
    gamma: float = Field(10.0, ge=0, description="weight of LTR relative to WR")
    window: int = Field(10, ge=1, description="word-relation window W (in aligned spans)")


def _with_encoding(out: ModelOutput, batch: Batch, side: str) -> ModelOutput:
    """Fill in offsets/mask from the batch's tokenisation when the output lacks them."""
    enc = getattr(batch, side)
    if (out.offsets is None or out.attention_mask is None) and enc is not None:
        return ModelOutput(
            out.logits,
            out.hidden_states,
            out.pooled,
            out.embedding,
            enc.attention_mask,
            enc.offsets,
        )
    return out


class CKD(KDMethod):
    """Contextual KD; terms ``"kd"``, ``"ce"`` (if alpha < 1), ``"wr"`` and ``"ltr"``."""

    def __init__(self, options: CKDOptions, context: BuildContext) -> None:
        super().__init__()
        self.options = options
        self.pairs = layer_pairs(options, context, "ckd")
        self.student_layers = [s for s, _ in self.pairs]
        self.teacher_layers = [t for _, t in self.pairs]
        self.requirements = Requirements(
            student=Needs(hidden_layers=tuple(sorted(set(self.student_layers)))),
            teacher=Needs(hidden_layers=tuple(sorted(set(self.teacher_layers)))),
        )

    @staticmethod
    def _pool(align: SpanAlignment, stacked, student_side: bool):
        """``[B, K, L, H]`` token states -> ``[B, K, T, H]`` span states (one scatter for all K)."""
        b, k, length, h = stacked.shape
        flat = stacked.permute(0, 2, 1, 3).reshape(b, length, k * h)  # [B, L, K*H]
        pooled = align.pool_student(flat) if student_side else align.pool_teacher(flat)
        return pooled.reshape(b, -1, k, h).permute(0, 2, 1, 3)  # [B, K, T, H]

    def forward(self, student: ModelOutput, teacher: ModelOutput | None, batch: Batch) -> LossTerms:
        """Logit terms plus the weighted word and layer-transforming relations over aligned spans."""
        terms = logit_terms(self.options, student, teacher, batch)
        student = _with_encoding(student, batch, "student")
        teacher = _with_encoding(teacher, batch, "teacher")
        align = align_outputs(student, teacher, "method (ckd)")
        hs = stack_layers(student.hidden_states, self.student_layers, "method (ckd): student")
        ht = stack_layers(teacher.hidden_states, self.teacher_layers, "method (ckd): teacher")
        hs = self._pool(align, hs, True)  # [B, K, T, Hs]
        ht = self._pool(align, ht.to(hs.dtype), False)  # [B, K, T, Ht]
        rel = ckd_loss(hs, ht, align.span_mask, window=self.options.window)
        o = self.options
        terms["wr"] = o.beta * rel.word_relation
        terms["ltr"] = o.beta * o.gamma * rel.layer_relation
        return terms


@hookimpl
def register_kd_methods(register):
    """Register ``ckd``."""
    register(
        "ckd",
        CKD,
        config=CKDOptions,
        description="contextual KD: word and layer relations over character-aligned spans (Park et al. 2021)",
    )
