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

**The teacher's side, once.** On the CPU path the teacher's relations of each training example
are computed the first time it is seen and kept (:class:`TeacherMemo`; ``teacher_relations``,
``teacher_memory_mb``): from the second epoch on a step computes the student's side only.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from kdkit.api import Batch, BuildContext, KDMethod, LossTerms, ModelOutput, Needs, Requirements
from kdkit.features import SpanAlignment, align_outputs, stack_layers
from kdkit.hookspecs import hookimpl
from kdkit.kernels import ckd_loss
from kdkit.kernels.ckd import TeacherRelations, relations_path, teacher_relations
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
    teacher_relations: Literal["fp16", "fp32", "off"] = Field(
        "fp16",
        description="keep the teacher's relations of each training example between epochs (CPU "
        "path) in this precision: fp16 (relations rounded to fp16 at every step, ~0.5 KB per "
        "span and layer at W=10), fp32 (exact, twice that), off (recomputed every step)",
    )
    teacher_memory_mb: float = Field(
        1024,
        ge=0,
        description="at most this much host memory (MB) for the kept relations; examples past "
        "it have theirs recomputed every step (0: keep nothing, as teacher_relations: off)",
    )


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
        keep = options.teacher_relations != "off"
        self.memo = TeacherMemo(
            int(options.teacher_memory_mb * 2**20) if keep else 0,
            torch.float16 if options.teacher_relations == "fp16" else torch.float32,
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
        hs = self._pool(align, hs, True)  # [B, K, T, Hs]
        o = self.options
        if self.memo.usable(batch) and relations_path(hs):
            side = self._teacher_relations(align, teacher, batch, hs.dtype)
        else:
            side = self._teacher_states(align, teacher, hs.dtype)
        rel = ckd_loss(hs, side, align.span_mask, window=o.window)
        terms["wr"] = o.beta * rel.word_relation
        terms["ltr"] = o.beta * o.gamma * rel.layer_relation
        return terms

    def _teacher_states(self, align: SpanAlignment, teacher: ModelOutput, dtype) -> torch.Tensor:
        """``[B, K, T, Ht]``: the teacher's matched layers pooled onto the spans."""
        ht = stack_layers(teacher.hidden_states, self.teacher_layers, "method (ckd): teacher")
        return self._pool(align, ht.to(dtype), False)

    def _teacher_relations(
        self, align: SpanAlignment, teacher: ModelOutput, batch: Batch, dtype
    ) -> TeacherRelations:
        """The batch's teacher relations, from the memo where every row is in it."""
        counts = align.span_mask.sum(1).tolist()  # anchors per row
        keys = [(batch.split, int(i)) for i in batch.index.tolist()]
        kept = self.memo.get(keys, counts)
        if kept is not None:
            return TeacherRelations.cat(kept, dtype)
        ht = self._teacher_states(align, teacher, dtype)
        rel = teacher_relations(ht, align.span_mask, window=self.options.window)
        rel = rel.to(self.memo.dtype)  # kept or not, every step sees the same rounding
        self.memo.put(keys, rel.rows(counts))
        return rel.to(dtype)


class TeacherMemo:
    """The teacher's CKD relations of each training example, kept between epochs.

    They are constants of training (frozen teacher, fixed tokenisations), and computing them
    from the teacher's states — its banded Gram at the teacher's width, the relations, the
    layer Gram — was about two thirds of what CKD added to an FT step on the CPU (the engine
    benchmark's default setting, ``benchmarks/engine/README.md``). Examples
    are keyed by ``(split, row)`` and kept in ``dtype``; the method rounds freshly computed
    relations to ``dtype`` too, so a batch of kept examples gives exactly the loss that
    recomputing gives (the same values joined in the same order). Up to ``budget`` bytes;
    examples past it are recomputed every time. Not part of the method's state: a resumed run
    recomputes them.
    """

    def __init__(self, budget: int, dtype: torch.dtype = torch.float16) -> None:
        self.budget = budget
        self.dtype = dtype
        self.used = 0
        self.rows: dict[tuple[str, int], TeacherRelations] = {}

    def usable(self, batch: Batch) -> bool:
        """Whether this batch's relations may be kept (training batches, a non-zero budget)."""
        return self.budget > 0 and batch.progress is not None

    def get(self, keys: list[tuple[str, int]], counts: list[int]) -> list[TeacherRelations] | None:
        """The kept relations of every row, or ``None`` unless all are kept (with their spans)."""
        kept = [self.rows.get(key) for key in keys]
        if any(k is None or k.anchors != n for k, n in zip(kept, counts, strict=True)):
            return None
        return kept  # type: ignore[return-value]

    def put(self, keys: list[tuple[str, int]], rows: list[TeacherRelations]) -> None:
        """Keep each row's relations while they fit (views of the batch's tensors, which stay
        alive with them: at most one batch's worth more than the rows kept)."""
        for key, rel in zip(keys, rows, strict=True):
            if key in self.rows:
                continue
            size = sum(x.numel() * x.element_size() for x in rel)
            if self.used + size > self.budget:
                return
            self.rows[key] = rel
            self.used += size


@hookimpl
def register_kd_methods(register):
    """Register ``ckd``."""
    register(
        "ckd",
        CKD,
        config=CKDOptions,
        description="contextual KD: word and layer relations over character-aligned spans (Park et al. 2021)",
    )
