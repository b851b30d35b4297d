"""AdamW, the linear warm-up/decay schedule, and gradient clipping that really clips.

The study's code passed a parameter *generator* to the optimiser and then to the clipper: the
first consumer emptied it and clipping silently did nothing. Here parameters are always a list.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from kdkit.config import TrainingConfig


def trainable_parameters(*modules: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Every parameter that requires grad across ``modules``, each once, as a list."""
    seen: set[int] = set()
    params: list[torch.nn.Parameter] = []
    for module in modules:
        for p in module.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    return params


def build_optimizer(params: list[torch.nn.Parameter], cfg: TrainingConfig) -> torch.optim.AdamW:
    """AdamW with the run's lr, eps and weight decay (no decay on biases and norms)."""
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, eps=cfg.adam_eps)


def linear_warmup_factor(step: int, total: int, warmup: int) -> float:
    """lr multiplier at ``step``: 0 -> 1 over ``warmup`` steps, then linearly to 0 at ``total``.

    After the warm-up this is ``transformers.get_linear_schedule_with_warmup``'s factor exactly;
    during it, it is one step ahead: ``(step + 1) / warmup`` where transformers has
    ``step / warmup``, whose first step has lr 0 (an optimiser step that learns nothing).
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup  # the first step already learns (1/warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


def build_schedule(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """The linear schedule with ``ceil(warmup_ratio * total_steps)`` warm-up steps."""
    warmup = math.ceil(warmup_ratio * total_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: linear_warmup_factor(step, total_steps, warmup)
    )


def clip_gradients(params: Iterable[torch.nn.Parameter], max_norm: float | None) -> float:
    """Clip the global gradient norm to ``max_norm`` (``None``: no clipping).

    Returns the norm *before* clipping (logged as ``grad_norm``).
    """
    params = list(params)  # a generator here would be the study's bug
    grads = [p for p in params if p.grad is not None]
    if not grads:
        return 0.0
    if max_norm is None:
        norms = torch.stack(
            [torch.linalg.vector_norm(p.grad.detach()) for p in grads if p.grad is not None]
        )  # (always: grads holds those; for mypy)
        return float(torch.linalg.vector_norm(norms))
    return float(torch.nn.utils.clip_grad_norm_(grads, max_norm))
