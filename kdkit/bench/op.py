"""What ``kdkit bench`` measures: :class:`BenchOp` (an op, its providers, shapes, minimal costs)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

Params = Mapping[str, int]
#: Modes every op is timed in: forward only, and forward + backward.
MODES = ("fwd", "fwd+bwd")


@dataclass
class Provider:
    """One implementation of an op.

    Attributes:
        name: short name shown in tables (``kdkit-triton``, ``reference``, ``torch-compile``...).
        fn: called as ``fn(**inputs)`` with the op's inputs; returns a loss tensor (or a tuple of
            loss tensors, which are summed).
        available: ``available(device) -> None`` when the provider can run on ``device``, else a
            one-line reason (shown as ``skipped``).
        compile: wrap ``fn`` with ``torch.compile`` on first use (its compile time is excluded
            from the timing and reported separately).
        interpreter: runs Triton kernels, so under ``TRITON_INTERPRET=1`` only tiny shapes run.
        skip_quick: a reason to skip this provider in ``--quick`` runs (e.g. a compile that takes
            minutes), or ``None``.
    """

    name: str
    fn: Callable[..., Any]
    available: Callable[[torch.device], str | None] = lambda device: None
    compile: bool = False
    interpreter: bool = False
    skip_quick: str | None = None


@dataclass
class BenchOp:
    """An op as the benchmark harness sees it.

    Attributes:
        name: the op's name (``kd_loss``...).
        description: one line.
        make_inputs: ``make_inputs(params, dtype, device, requires_grad) -> dict`` of keyword
            arguments for the providers (tensors and options), seeded and deterministic.
        grad_inputs: names of the inputs that receive a gradient in ``fwd+bwd`` mode.
        reference: the spec, called as ``reference(**inputs)`` on float64 copies for the
            correctness gate.
        providers: the implementations to compare.
        shapes: named shape lists (``priority``, ``quick``...), each a list of parameter dicts.
        bytes_min: ``bytes_min(params, dtype, mode)``: the bytes any implementation must move.
        flops_min: ``flops_min(params, dtype, mode)``: the FLOPs any implementation must do.
        gate_params: the (smaller) shape the correctness gate runs at for a timed shape, so the
            float64 reference fits in memory; default: the same shape.
        tolerance: ``tolerance(dtype) -> (loss_rtol, grad_rtol)`` of the gate; ``grad_rtol`` is
            relative to the largest reference gradient entry.
        size_label: ``size_label(params) -> str`` shown in tables and plots.
    """

    name: str
    description: str
    make_inputs: Callable[[Params, torch.dtype, torch.device, bool], dict[str, Any]]
    grad_inputs: Sequence[str]
    reference: Callable[..., Any]
    providers: list[Provider]
    shapes: Mapping[str, list[dict[str, int]]]
    bytes_min: Callable[[Params, torch.dtype, str], float]
    flops_min: Callable[[Params, torch.dtype, str], float] = lambda p, d, m: 0.0
    gate_params: Callable[[Params], dict[str, int]] = lambda p: dict(p)
    tolerance: Callable[[torch.dtype], tuple[float, float]] = field(
        default=lambda dtype: {torch.float32: (1e-4, 1e-3), torch.float16: (5e-3, 1e-2)}.get(
            dtype, (2e-2, 5e-2)
        )
    )
    size_label: Callable[[Params], str] = lambda p: ",".join(f"{k}={v}" for k, v in p.items())


def total_loss(out: Any) -> torch.Tensor:
    """A provider's result as one scalar (tuples of terms are summed)."""
    if isinstance(out, torch.Tensor):
        return out
    return sum(out)
