"""kdkit's linear warm-up schedule against transformers.get_linear_schedule_with_warmup.

They agree after the warm-up and differ during it by one step (transformers' first step has lr
0): what optim.linear_warmup_factor's docstring says. This pins that statement.
"""

from __future__ import annotations

import math

import torch
from transformers import get_linear_schedule_with_warmup

from kdkit.engine.optim import build_schedule


def lrs(schedule, optimizer, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        out.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    return out


def test_equal_after_warmup_one_step_ahead_during_it():
    for total, ratio in [(10, 0.2), (100, 0.1), (37, 0.3)]:
        warmup = math.ceil(ratio * total)
        opt_a = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        opt_b = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        ours = lrs(build_schedule(opt_a, total, ratio), opt_a, total)
        hf = lrs(get_linear_schedule_with_warmup(opt_b, warmup, total), opt_b, total)
        assert ours[warmup:] == hf[warmup:]  # identical floats after the warm-up
        assert hf[0] == 0.0 and ours[0] == 1 / warmup
        assert ours[: warmup - 1] == hf[1:warmup]  # one step ahead during it
