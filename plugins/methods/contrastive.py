"""Built-in method ``contrastive``: CRD-style contrastive distillation with InfoNCE.

Tian, Krishnan, Isola, "Contrastive Representation Distillation" (ICLR 2020), in its InfoNCE
form. Student and teacher head features are projected to a shared width ``d`` by two trainable
linear maps (``g_s``, ``g_t``, owned by the method) and L2-normalised::

    loss = weight · mean_i CE([s_i·t_1, …, s_i·t_B, s_i·q_1, …, s_i·q_Q] / tau, target i)
         + alpha · [T² ·] KD + (1 − alpha) · CE(z_s, y)

Positives are the same example's teacher embedding; negatives are the other examples of the
batch and, with ``queue_size > 0``, up to ``queue_size`` teacher embeddings of past batches (a
bounded FIFO, detached: no unbounded memory bank, unlike CRD's). Queued embeddings were projected
by an older ``g_t``; keep the queue short relative to the training length. ``tau`` is
``nce_temperature``; the KD ``temperature`` only matters when ``alpha > 0``.

Under DDP/FSDP the InfoNCE term is computed on the global batch (every rank's rows, gathered with
gradients: ``kdkit.engine.distributed.global_rows``), so it equals the one-process term; every
rank enqueues the same global rows.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from kdkit.api import Batch, BuildContext, KDMethod, LossTerms, ModelOutput, Needs, Requirements
from kdkit.engine.distributed import global_rows
from kdkit.hookspecs import hookimpl
from kdkit.kernels import infonce_loss
from kdkit.kernels.relations import infonce_with_negatives
from kdkit.plugins.methods.common import LogitOptions, logit_terms, output_feature, require_infos


class ContrastiveOptions(LogitOptions):
    """Options of ``contrastive`` (alpha defaults to 0: InfoNCE plus label CE)."""

    weight: float = Field(1.0, ge=0, description="weight of the InfoNCE term")
    nce_temperature: float = Field(0.07, gt=0, description="InfoNCE temperature tau")
    proj_dim: int = Field(128, ge=1, description="width d of the shared embedding space")
    queue_size: int = Field(
        0,
        ge=0,
        le=65536,
        description="past teacher embeddings kept as extra negatives (0 = in-batch only)",
    )


class Contrastive(KDMethod):
    """InfoNCE between projected embeddings; terms ``"nce"``, ``"ce"``, ``"kd"`` (if alpha > 0)."""

    def __init__(self, options: ContrastiveOptions, context: BuildContext) -> None:
        super().__init__()
        student, teacher = require_infos(context, "contrastive")
        self.options = options
        self.student_proj = nn.Linear(student.feature_size, options.proj_dim)
        self.teacher_proj = nn.Linear(teacher.feature_size, options.proj_dim)
        # the queue is state of the run (saved with the method so a resumed run continues it)
        self.register_buffer("queue", torch.zeros(options.queue_size, options.proj_dim))
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("queue_next", torch.zeros((), dtype=torch.long))
        self.requirements = Requirements(Needs(embedding=True), Needs(embedding=True))

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor) -> None:
        """Write ``keys`` ``[B, d]`` into the ring buffer, overwriting the oldest entries."""
        q = self.queue.shape[0]
        keys = keys[-q:]  # a batch larger than the queue keeps its last q rows
        slots = (self.queue_next + torch.arange(keys.shape[0], device=keys.device)) % q
        self.queue[slots] = keys.to(self.queue.dtype)
        self.queue_next.copy_((self.queue_next + keys.shape[0]) % q)
        self.queue_filled.copy_(torch.clamp(self.queue_filled + keys.shape[0], max=q))

    def forward(self, student: ModelOutput, teacher: ModelOutput | None, batch: Batch) -> LossTerms:
        """Logit terms plus ``weight`` times InfoNCE (in-batch, plus queued negatives)."""
        terms = logit_terms(self.options, student, teacher, batch)
        s_feat = output_feature(student, "student", "contrastive")  # [B, Hs]
        t_feat = output_feature(teacher, "teacher", "contrastive").to(s_feat.dtype)
        # the whole global batch's rows on every rank (one process: these rows), with gradients,
        # so a multi-process run has the one-process negatives, loss and gradients
        s = global_rows(self.student_proj(s_feat))  # [B, d]
        t = global_rows(self.teacher_proj(t_feat))  # [B, d], trainable projection of detached
        tau = self.options.nce_temperature
        if self.options.queue_size == 0:
            nce = infonce_loss(s, t, temperature=tau)
        else:
            negatives = self.queue[: int(self.queue_filled)].clone()  # [Q', d]
            nce = infonce_with_negatives(s, t, negatives, temperature=tau)
            if self.training:
                self._enqueue(t.detach())
        terms["nce"] = self.options.weight * nce
        return terms


@hookimpl
def register_kd_methods(register):
    """Register ``contrastive``."""
    register(
        "contrastive",
        Contrastive,
        config=ContrastiveOptions,
        description="CRD-style InfoNCE between projected embeddings, in-batch (+ bounded queue) negatives (Tian et al. 2020)",
    )
