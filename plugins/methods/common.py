"""Pieces shared by the built-in KD methods (not an entry point; not a public API).

* :class:`LogitOptions` — the logit-KD knobs every method that mixes in KD/CE terms shares;
* :func:`logit_terms` — the ``"kd"`` and ``"ce"`` terms from those options;
* :class:`LayerOptions` — the layer-mapping knobs of feature methods (see :func:`kdkit.features.map_layers`).

The label CE is :func:`kdkit.losses.cross_entropy`, the one ``ft`` and ``kdkit teach`` use.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from kdkit.api import Batch, BuildContext, LossTerms, ModelInfo, ModelOutput, Options
from kdkit.errors import KdkitError
from kdkit.features import LayerStrategy, map_layers
from kdkit.kernels import TopKTeacher, kd_loss, sparse_kd_loss
from kdkit.kernels.sparse_kd import bucket_logprobs
from kdkit.losses import cross_entropy


class LogitOptions(Options):
    """Soft-target KD mixed with label CE: ``alpha·soft + (1 − alpha)·CE(z_s, y)``.

    ``soft`` is ``KL(p_t^T ‖ p_s^T)`` (``"kl"``) or ``CE(z_s/T, p_t^T)`` (``"ce"``; the same
    gradient, offset by the teacher's entropy), times ``T²`` when ``t2_scaling``.
    """

    alpha: float = Field(
        0.0, ge=0, le=1, description="weight of the soft KD term; 1-alpha weighs label CE"
    )
    temperature: float = Field(4.0, gt=0, description="softmax temperature T of the KD term")
    soft: Literal["kl", "ce"] = Field(
        "kl", description="soft term: KL divergence or soft cross-entropy"
    )
    t2_scaling: bool = Field(True, description="multiply the soft term by T^2 (Hinton)")


def logit_terms(
    options: LogitOptions, student: ModelOutput, teacher: ModelOutput | None, batch: Batch
) -> LossTerms:
    """``{"kd": alpha·soft, "ce": (1 − alpha)·CE}``, leaving out terms with weight 0."""
    terms: LossTerms = {}
    zs = student.logits  # [B, C]
    if options.alpha > 0:
        if teacher is None:
            raise KdkitError(
                "the KD term needs teacher logits but no teacher output was given",
                where="method.alpha",
                fix="configure a teacher, or set alpha: 0",
            )
        topk = getattr(teacher, "topk", None)  # a top-k cache or import: KL over k + 1 buckets
        if topk is not None:
            soft = topk_soft_term(options, zs, topk)
        else:
            zt = teacher.logits.to(zs.dtype)  # cached teachers may be fp16
            soft = kd_loss(
                zs,
                zt,
                temperature=options.temperature,
                alpha=1.0,
                soft=options.soft,
                t2_scaling=options.t2_scaling,
            )
        terms["kd"] = options.alpha * soft
    if options.alpha < 1:
        terms["ce"] = (1.0 - options.alpha) * cross_entropy(zs, batch.labels)
    return terms


def topk_soft_term(options: LogitOptions, zs: torch.Tensor, topk: TopKTeacher) -> torch.Tensor:
    """The soft KD term from a top-k teacher (``ModelOutput.topk``): ``[T² ·] KL`` between the
    teacher's ``k + 1`` buckets (top-k + tail, moved from their stored temperature to ``T`` by
    :func:`kdkit.kernels.sparse_kd_loss`) and the student's distribution collapsed onto them.

    With ``k = C`` it is the full-logit KL exactly; ``soft: ce`` adds the teacher's bucket
    entropy (the full entropy when ``k = C``; a constant either way: the gradient is the KL's).
    """
    t = options.temperature
    soft = sparse_kd_loss(zs, topk, t, t2_scaling=options.t2_scaling)
    if options.soft == "ce":
        log_p, log_q = bucket_logprobs(topk, t, num_classes=zs.shape[1])  # [B, k], [B]
        both = torch.cat([log_p, log_q.unsqueeze(1)], dim=1)  # the k + 1 buckets at T
        entropy = -torch.where(both.exp() > 0, both.exp() * both, 0.0).sum(1).mean()
        soft = soft + (t * t if options.t2_scaling else 1.0) * entropy
    return soft


class LayerOptions(Options):
    """Which student layer learns from which teacher layer (see ``kdkit.features.map_layers``)."""

    layers: LayerStrategy = Field(
        "uniform",
        description="'uniform', 'skip', 'last', a list of teacher layers (one per student layer) "
        "or a list of [student_layer, teacher_layer] pairs",
    )
    exclude_last: bool = Field(False, description="drop the pair of the last student layer")
    include_embeddings: bool = Field(False, description="also match the embeddings (layer 0)")


def require_infos(context: BuildContext, method: str) -> tuple[ModelInfo, ModelInfo]:
    """``(student, teacher)`` infos from the build context, or an error saying what is missing."""
    if context.student is None or context.teacher is None:
        raise KdkitError(
            f"method '{method}' needs a teacher and a student",
            where="teacher",
            fix="add a teacher section to the run file, or use method 'ft'",
        )
    return context.student, context.teacher


def layer_pairs(options: LayerOptions, context: BuildContext, method: str) -> list[tuple[int, int]]:
    """The matched ``(student_layer, teacher_layer)`` pairs for ``options`` and the two models."""
    student, teacher = require_infos(context, method)
    return map_layers(
        student.num_layers,
        teacher.num_layers,
        options.layers,
        exclude_last=options.exclude_last,
        include_embeddings=options.include_embeddings,
        where=f"method ({method}).layers",
    )


def output_feature(out: ModelOutput, side: str, method: str) -> torch.Tensor:
    """The ``[B, H]`` embedding of a model output, or an error if the model did not return it."""
    if out.embedding is None:
        raise KdkitError(
            f"the {side} returned no embedding (the feature its head reads)",
            where=f"method ({method})",
            fix=f"the {side} must honour Needs(embedding=True)",
        )
    return out.embedding
