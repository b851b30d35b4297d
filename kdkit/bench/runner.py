"""Run every op x provider x shape x dtype x mode: correctness gate first, then timing."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import time
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from kdkit.bench.op import MODES, BenchOp, Provider, total_loss
from kdkit.bench.timing import (
    first_call_seconds,
    measure_ceilings,
    peak_memory_bytes,
    sync,
    time_fn,
)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
#: Largest input (elements) the Triton CPU interpreter is asked to run.
INTERPRETER_MAX_NUMEL = 1 << 12


def _git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=os.path.dirname(os.path.abspath(__file__)),
        )
        return out.stdout.strip() or "unknown"
    except Exception:
        return "unknown"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict[str, Any]:
    """Device, versions, git sha and date recorded with every result."""
    try:
        import triton

        triton_version = triton.__version__
    except Exception:
        triton_version = None
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{_cpu_name()} ({torch.get_num_threads()} threads, {os.cpu_count()} cores)"
    return {
        "device": device.type,
        "device_name": name,
        "torch": torch.__version__,
        "triton": triton_version,
        "triton_interpret": os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"),
        "python": platform.python_version(),
        "git_sha": _git_sha(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _grad_tensors(inputs: dict[str, Any], names: Iterable[str]) -> list[torch.Tensor]:
    return [
        inputs[n]
        for n in names
        if isinstance(inputs.get(n), torch.Tensor) and inputs[n].requires_grad
    ]


def _closure(fn, inputs: dict[str, Any], mode: str, grads: Sequence[torch.Tensor]):
    if mode == "fwd":

        def run():
            with torch.no_grad():
                return fn(**inputs)

        return run

    def run():
        for t in grads:
            t.grad = None
        total_loss(fn(**inputs)).backward()

    return run


def check_correctness(
    op: BenchOp, fn, params, dtype: torch.dtype, device: torch.device
) -> tuple[bool, float, float, str]:
    """Compare ``fn`` with the float64 reference on the same (quantised) inputs.

    Returns ``(ok, loss_rel_err, grad_rel_err, message, first_call_seconds)``; the gate runs at
    ``op.gate_params``.
    """
    gp = op.gate_params(params)
    inputs = op.make_inputs(gp, dtype, device, True)
    ref_inputs = {
        k: (
            v.detach().double().requires_grad_(v.requires_grad)
            if isinstance(v, torch.Tensor) and v.is_floating_point()
            else v
        )
        for k, v in inputs.items()
    }
    t0 = time.perf_counter()
    got = total_loss(fn(**inputs))
    got.backward()
    sync(device)
    first_s = time.perf_counter() - t0  # includes torch.compile / Triton JIT compilation
    want = total_loss(op.reference(**ref_inputs))
    want.backward()
    loss_tol, grad_tol = op.tolerance(dtype)
    loss_err = abs(got.item() - want.item()) / max(1.0, abs(want.item()))
    grad_err = 0.0
    for name in op.grad_inputs:
        g, w = inputs[name].grad, ref_inputs[name].grad
        if w is None:
            continue
        if g is None:
            return False, loss_err, float("inf"), f"no gradient for {name}", first_s
        scale = max(w.abs().max().item(), 1e-12)
        grad_err = max(grad_err, (g.double() - w).abs().max().item() / scale)
    ok = loss_err <= loss_tol and grad_err <= grad_tol and torch.isfinite(got).item()
    msg = (
        ""
        if ok
        else f"loss err {loss_err:.2e} (tol {loss_tol:.0e}), grad err {grad_err:.2e} (tol {grad_tol:.0e})"
    )
    return ok, loss_err, grad_err, msg, first_s


def _numel(inputs: dict[str, Any]) -> int:
    return sum(v.numel() for v in inputs.values() if isinstance(v, torch.Tensor))


def _resolve(provider: Provider, cache: dict):
    if not provider.compile:
        return provider.fn
    if provider.name not in cache:
        cache[provider.name] = torch.compile(provider.fn, dynamic=True)
    return cache[provider.name]


def run_bench(
    ops: Sequence[BenchOp],
    device: torch.device,
    *,
    dtypes: Sequence[str] = ("fp32",),
    shapes: str = "quick",
    modes: Sequence[str] = MODES,
    providers: Sequence[str] | None = None,
    quick: bool = False,
    check_only: bool = False,
    max_seconds: float | None = None,
    log=print,
    env: dict[str, Any] | None = None,
    rows: list[dict[str, Any]] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Measure ``ops`` on ``device``; returns ``(environment, rows)`` (one row per measurement).

    Pass ``env``/``rows`` (empty dict/list) to keep what was measured if the run is interrupted.
    """
    env = {} if env is None else env
    env.update(environment(device))
    env.update(measure_ceilings(device))
    bw = env.get("copy_bandwidth_gbps")
    peak_flops = env.get("bf16_matmul_tflops")
    rows = [] if rows is None else rows
    started = time.perf_counter()
    interp = env["triton_interpret"] and device.type == "cpu"
    for op in ops:
        compiled: dict[str, Any] = {}
        for params in op.shapes.get(shapes, []):
            for dname in dtypes:
                dtype = DTYPES[dname]
                gate: dict[str, tuple[bool, str, float, float, float]] = {}
                for mode in modes:
                    ref_ms = None
                    for prov in op.providers:
                        if providers and prov.name not in providers:
                            continue
                        row = {
                            "op": op.name,
                            "size": op.size_label(params),
                            "params": dict(params),
                            "dtype": dname,
                            "mode": mode,
                            "provider": prov.name,
                            "status": "ok",
                            "reason": "",
                            "median_ms": None,
                            "p20_ms": None,
                            "p80_ms": None,
                            "compile_s": None,
                            "loss_err": None,
                            "grad_err": None,
                            "peak_mem_mb": None,
                            "bytes_min": op.bytes_min(params, dtype, mode),
                            "flops_min": op.flops_min(params, dtype, mode),
                            "gbps": None,
                            "tflops": None,
                            "t_floor_ms": None,
                            "roofline": None,
                            "vs_reference": None,
                        }
                        rows.append(row)
                        reason = prov.available(device)
                        if reason is None and quick and prov.skip_quick:
                            reason = prov.skip_quick
                        if (
                            reason is None
                            and max_seconds is not None
                            and time.perf_counter() - started > max_seconds
                        ):
                            reason = f"time budget of {max_seconds:.0f} s used up"
                        if reason is None and prov.interpreter and interp:
                            n = _numel(op.make_inputs(params, dtype, torch.device("meta"), False))
                            if n > INTERPRETER_MAX_NUMEL:
                                reason = f"{n} elements is too large for the Triton CPU interpreter"
                        if reason:
                            row.update(status="skipped", reason=reason)
                            continue
                        fn = _resolve(prov, compiled)
                        try:
                            fresh = prov.name not in gate
                            if fresh:
                                ok, le, ge, msg, gate_s = check_correctness(
                                    op, fn, params, dtype, device
                                )
                                gate[prov.name] = (ok, msg, le, ge, gate_s)
                            ok, msg, le, ge, gate_s = gate[prov.name]
                            row.update(loss_err=le, grad_err=ge)
                            if not ok:
                                row.update(status="FAILED", reason=f"correctness gate: {msg}")
                                continue
                            if check_only:
                                continue
                            inputs = op.make_inputs(params, dtype, device, mode != "fwd")
                            grads = _grad_tensors(inputs, op.grad_inputs)
                            run = _closure(fn, inputs, mode, grads)
                            first = first_call_seconds(run, device)
                            med, p20, p80 = time_fn(run, device, quick=quick, grad_to_none=grads)
                            row.update(median_ms=med, p20_ms=p20, p80_ms=p80)
                            # compilation happens on a provider's first call: the gate's (fwd+bwd)
                            # or, for a graph not seen yet (no-grad forward), the timing's first
                            row["compile_s"] = max(
                                0.0, first - med / 1e3, (gate_s - med / 1e3) if fresh else 0.0
                            )
                            if not (prov.interpreter and interp):
                                peak = peak_memory_bytes(run, device)
                                row["peak_mem_mb"] = None if peak is None else peak / 2**20
                            del inputs, grads, run
                        except torch.cuda.OutOfMemoryError as exc:  # report and go on
                            row.update(
                                status="skipped",
                                reason=f"out of memory: {str(exc).splitlines()[0]}",
                            )
                            torch.cuda.empty_cache()
                            continue
                        except Exception as exc:
                            row.update(
                                status="error",
                                reason=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                            )
                            continue
                        sec = row["median_ms"] / 1e3
                        row["gbps"] = row["bytes_min"] / sec / 1e9
                        row["tflops"] = row["flops_min"] / sec / 1e12 if row["flops_min"] else None
                        if bw and peak_flops:
                            floor = max(
                                row["bytes_min"] / (bw * 1e9),
                                row["flops_min"] / (peak_flops * 1e12),
                            )
                            row["t_floor_ms"] = floor * 1e3
                            row["roofline"] = floor / sec
                        if prov.name == "reference":
                            ref_ms = row["median_ms"]
                        log(
                            f"  {op.name:13s} {row['size']:28s} {dname:4s} {mode:7s} {prov.name:14s} {row['median_ms']:10.3f} ms"
                        )
                    for r in rows:
                        if (r["op"], r["size"], r["dtype"], r["mode"]) == (
                            op.name,
                            op.size_label(params),
                            dname,
                            mode,
                        ):
                            if ref_ms and r["median_ms"]:
                                r["vs_reference"] = ref_ms / r["median_ms"]
    return env, rows
