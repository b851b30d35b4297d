"""Timers, hardware ceilings and peak memory for ``kdkit bench``."""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import torch


def sync(device: torch.device) -> None:
    """Wait for the device (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(
    fn: Callable[[], object],
    device: torch.device,
    *,
    quick: bool,
    grad_to_none: Sequence[torch.Tensor] = (),
) -> tuple[float, float, float]:
    """``(median, p20, p80)`` milliseconds of ``fn``.

    GPU: ``triton.testing.do_bench`` (L2 flushed between runs, gradients reset); CPU:
    ``torch.utils.benchmark.Timer.blocked_autorange`` (one thread count, as configured).
    """
    if device.type == "cuda":
        from triton.testing import do_bench

        med, p20, p80 = do_bench(
            fn,
            warmup=10 if quick else 25,
            rep=40 if quick else 100,
            grad_to_none=list(grad_to_none) or None,
            quantiles=[0.5, 0.2, 0.8],
        )
        return float(med), float(p20), float(p80)
    from torch.utils import benchmark

    def run():
        for t in grad_to_none:
            t.grad = None
        fn()

    m = benchmark.Timer(stmt="run()", globals={"run": run}).blocked_autorange(
        min_run_time=0.15 if quick else 1.0
    )
    times = sorted(m.times)
    q = statistics.quantiles(times, n=5) if len(times) >= 2 else [times[0]] * 4
    return m.median * 1e3, q[0] * 1e3, q[3] * 1e3


def first_call_seconds(fn: Callable[[], object], device: torch.device) -> float:
    """Wall time of one call (the first one includes JIT / ``torch.compile`` compilation)."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


@contextlib.contextmanager
def _quiet_stderr():
    """Silence the profiler's native start/stop lines on file descriptor 2."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_memory_bytes(fn: Callable[[], object], device: torch.device) -> int | None:
    """Peak bytes allocated by one call of ``fn`` over what was allocated before it."""
    if device.type == "cuda":
        sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        sync(device)
        return int(torch.cuda.max_memory_allocated(device) - base)
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    try:
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    except Exception:  # profiler internals changed: report no number rather than a wrong one
        return None
    live = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def _copy_bandwidth(device: torch.device) -> float:
    from triton.testing import do_bench

    src = torch.empty(1 << 30, dtype=torch.bfloat16, device=device).fill_(1.0)  # 2 GiB
    dst = torch.empty_like(src)
    ms = do_bench(lambda: dst.copy_(src), warmup=5, rep=30, return_mode="median")
    return 2 * src.numel() * src.element_size() / (ms * 1e-3)  # bytes read + written per second


def _matmul_rate(device: torch.device) -> float:
    from triton.testing import do_bench

    m = 8192
    a = torch.randn(m, m, dtype=torch.bfloat16, device=device)
    b = torch.randn(m, m, dtype=torch.bfloat16, device=device)
    ms = do_bench(lambda: a @ b, warmup=5, rep=30, return_mode="median")
    return 2 * m**3 / (ms * 1e-3)


def measure_ceilings(device: torch.device) -> dict[str, float]:
    """Copy bandwidth (>= 2 GB buffer, bytes read + written) and bf16 matmul rate, measured now."""
    if device.type != "cuda":
        return {}
    bw = _copy_bandwidth(device)
    torch.cuda.empty_cache()
    flops = _matmul_rate(device)
    torch.cuda.empty_cache()
    return {"copy_bandwidth_gbps": bw / 1e9, "bf16_matmul_tflops": flops / 1e12}
