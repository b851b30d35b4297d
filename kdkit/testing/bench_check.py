"""Conformance check of a benchmarked op (:class:`kdkit.bench.BenchOp`), on CPU."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from kdkit.bench.op import MODES, BenchOp, total_loss


@dataclass
class BenchOpReport:
    """What :func:`check_bench_op` measured.

    Attributes:
        params: the shape checked (the ``quick`` shape with the fewest elements, at its gate size).
        reference_loss: the float64 reference's loss there.
        checked: providers compared with the reference (eager ones available on CPU).
        skipped: provider name -> why it was not run here (compiled, Triton, not available).
    """

    params: dict[str, int]
    reference_loss: float
    checked: list[str]
    skipped: dict[str, str]


def _as_op(op: BenchOp | str | Callable[..., Any]) -> BenchOp:
    if isinstance(op, BenchOp):
        return op
    if isinstance(op, str):
        from kdkit.discovery import load_plugins

        component = load_plugins().registry.get("bench_op", op)
        built = component.build(component.options(), None)
        assert isinstance(built, BenchOp), (
            f"bench op '{op}' factory returned {type(built).__name__}, not a kdkit.bench.BenchOp"
        )
        assert built.name == op, f"bench op registered as '{op}' calls itself '{built.name}'"
        return built
    return _as_op(op(None, None))


def _float64(inputs: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v.detach().double().requires_grad_(v.requires_grad)
        if isinstance(v, torch.Tensor) and v.is_floating_point()
        else v
        for k, v in inputs.items()
    }


def check_bench_op(op: BenchOp | str | Callable[..., Any]) -> BenchOpReport:
    """Check a bench op against what ``kdkit bench`` relies on, on CPU in float32.

    Verifies: unique provider names; a non-empty ``quick`` shape list of integer parameters;
    ``make_inputs`` is deterministic and gives every ``grad_inputs`` entry as a tensor that
    requires grad; the float64 reference returns a finite loss whose gradients reach every
    grad input; ``bytes_min`` is positive and ``flops_min`` non-negative in both modes;
    ``size_label`` is a string; and every eager provider available on CPU passes the
    benchmark's own correctness gate (``kdkit.bench.runner.check_correctness``). Compiled and
    Triton providers are skipped here (they are the kernel tests' business).

    Args:
        op: a :class:`BenchOp`, a registered bench-op name, or a factory ``(options, context)``.
    """
    from kdkit.bench.runner import check_correctness

    op = _as_op(op)
    names = [p.name for p in op.providers]
    assert names and len(set(names)) == len(names), (
        f"{op.name}: provider names {names} must be unique"
    )
    quick = op.shapes.get("quick")
    assert quick, f"{op.name}: shapes must include a non-empty 'quick' list (CPU and CI runs)"
    for params in (p for shapes in op.shapes.values() for p in shapes):
        assert all(isinstance(v, int) for v in params.values()), f"{op.name}: shape {params}"
    params = op.gate_params(min(quick, key=lambda p: math.prod(p.values())))
    cpu, f32 = torch.device("cpu"), torch.float32
    first, again = op.make_inputs(params, f32, cpu, True), op.make_inputs(params, f32, cpu, True)
    assert set(first) == set(again), f"{op.name}: make_inputs keys vary"
    for k, v in first.items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(v, again[k]), f"{op.name}: make_inputs is not deterministic ({k})"
    for name in op.grad_inputs:
        assert isinstance(first.get(name), torch.Tensor) and first[name].requires_grad, (
            f"{op.name}: grad input '{name}' is not a tensor requiring grad"
        )
    ref_inputs = _float64(first)
    loss = total_loss(op.reference(**ref_inputs))
    assert loss.dim() == 0 and torch.isfinite(loss), f"{op.name}: reference loss {loss}"
    loss.backward()
    for name in op.grad_inputs:
        grad = ref_inputs[name].grad
        assert grad is not None and bool(torch.isfinite(grad).all()), (
            f"{op.name}: the reference gives no finite gradient for '{name}'"
        )
    for mode in MODES:
        assert op.bytes_min(params, f32, mode) > 0, f"{op.name}: bytes_min must be > 0 ({mode})"
        assert op.flops_min(params, f32, mode) >= 0, f"{op.name}: flops_min must be >= 0 ({mode})"
    assert isinstance(op.size_label(params), str)
    checked, skipped = [], {}
    for provider in op.providers:
        reason = provider.available(cpu)
        if reason is None and (provider.compile or provider.interpreter):
            reason = "compiled / Triton provider: checked by the kernel tests"
        if reason is not None:
            skipped[provider.name] = reason
            continue
        ok, loss_err, grad_err, message, _ = check_correctness(op, provider.fn, params, f32, cpu)
        assert ok, f"{op.name}: provider '{provider.name}' fails the correctness gate: {message}"
        checked.append(provider.name)
    return BenchOpReport(dict(params), float(loss.detach()), checked, skipped)
