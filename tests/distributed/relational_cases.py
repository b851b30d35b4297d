"""The batch-relational terms (contrastive, RKD, DIST) on one seeded batch: the same code runs
on one process (the reference) and on each rank of ``relational_worker.py`` (its share).

Each rank computes its :func:`~kdkit.engine.distributed.split_rows` share, as the training step
does, scales the term by :func:`~kdkit.engine.distributed.loss_weight` and back-propagates; what
DDP then does is reproduced here: method parameter gradients averaged over ranks; a row's
gradient (what reaches the student's parameters through that row) divided by the world size.
"""

from __future__ import annotations

import torch

from kdkit.api import Batch, BuildContext, ModelInfo, ModelOutput
from kdkit.engine.distributed import loss_weight, real_rows, split_rows
from kdkit.plugins.methods.contrastive import Contrastive, ContrastiveOptions
from kdkit.plugins.methods.dist import DIST, DISTOptions
from kdkit.plugins.methods.rkd import RKD, RKDOptions

#: rows of the global batch: odd, so the two ranks' shares are uneven (4 and 3)
ROWS = 7
CASES = ("contrastive", "rkd", "dist")


def build(name: str) -> tuple[torch.nn.Module, tuple[str, ...]]:
    """The method (seeded projections) and the names of its relational terms."""
    torch.manual_seed(5)
    ctx = BuildContext(
        student=ModelInfo("s", "test", 1, 6, 0), teacher=ModelInfo("t", "test", 1, 8, 0)
    )
    if name == "contrastive":
        return Contrastive(ContrastiveOptions(proj_dim=4, nce_temperature=0.5), ctx), ("nce",)
    if name == "rkd":
        return RKD(RKDOptions(), ctx), ("rkd_d", "rkd_a")
    return DIST(DISTOptions(), ctx), ("dist",)


def run(name: str, rank: int = 0, world: int = 1) -> dict[str, object]:
    """This rank's relational loss value, method parameter gradients and row gradients."""
    gen = torch.Generator().manual_seed(11)
    s_emb = torch.randn(ROWS, 6, generator=gen, dtype=torch.float64)
    t_emb = torch.randn(ROWS, 8, generator=gen, dtype=torch.float64)
    s_log = torch.randn(ROWS, 3, generator=gen, dtype=torch.float64)
    t_log = torch.randn(ROWS, 3, generator=gen, dtype=torch.float64)
    method, keys = build(name)
    method.double()
    rows = split_rows(list(range(ROWS)), rank, world)
    weight = loss_weight(len(rows), ROWS, world)
    emb = s_emb[rows].clone().requires_grad_()
    logits = s_log[rows].clone().requires_grad_()
    student = ModelOutput(logits=logits, embedding=emb)
    teacher = ModelOutput(logits=t_log[rows], embedding=t_emb[rows])
    labels = torch.zeros(len(rows), dtype=torch.long)
    batch = Batch([""] * len(rows), labels, torch.tensor(rows), None)  # type: ignore[arg-type]
    with real_rows(len(rows)):
        terms = method(student, teacher, batch)
    loss = sum(terms[k] for k in keys)
    (weight * loss).backward()
    return {
        "rows": rows,
        "loss": float(loss.detach()),
        "params": {n: p.grad.clone() for n, p in method.named_parameters() if p.grad is not None},
        "emb_grad": torch.zeros_like(emb) if emb.grad is None else emb.grad.clone(),
        "logit_grad": torch.zeros_like(logits) if logits.grad is None else logits.grad.clone(),
    }
