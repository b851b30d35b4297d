"""The named regions of a training step, and the ranges the engine marks them with.

The engine wraps each part of :meth:`kdkit.engine.loop.Trainer.train_step` in
``with region(NAME):``. When nothing profiles, :func:`region` returns one shared
``nullcontext`` after two flag checks (no allocation, no dispatcher call): the ranges are free in
an ordinary run. While ``torch.profiler`` is active each region is a ``record_function`` range
(it shows in the trace and in the operator table as ``kdkit/NAME``); while a
:class:`RegionRecorder` is installed (``kdkit profile``) it is also timed — on CUDA with CUDA
events on the current stream (GPU time, not launch time) and with NVTX ranges for ``nsys`` /
``ncu`` — and the process's resident memory is sampled at its edges.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import torch

#: The regions of one training step, in the order they run (name -> what it holds).
REGIONS: dict[str, str] = {
    "data": "batch collation and the copy to the device",
    "teacher": "teacher forward (live) or the cache read",
    "student_forward": "the student's forward pass",
    "loss_forward": "the method's loss terms (fused KD ops), their sum and reading them back",
    "backward": "zero_grad and the backward pass",
    "optimizer": "gradient clipping, the optimizer step and the schedule",
}
#: The prefix of every range's name (``kdkit/student_forward``) in traces and operator tables.
PREFIX = "kdkit/"

_NULL = contextlib.nullcontext()
_recorder: RegionRecorder | None = None


def _profiler_active() -> bool:
    return torch.autograd._profiler_enabled()


def region(name: str) -> contextlib.AbstractContextManager[Any]:
    """A context marking the step region ``name`` (one of :data:`REGIONS`).

    Free (a shared ``nullcontext``) unless ``torch.profiler`` or a :class:`RegionRecorder` is
    active.
    """
    if _recorder is None and not _profiler_active():
        return _NULL
    return _Range(name)


def _rss_bytes() -> int:
    """This process's resident set size now (Linux ``/proc``; 0 where it cannot be read)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


@dataclass
class RegionRecorder:
    """Times the regions of the steps it sees (installed by :func:`recording`).

    Attributes:
        cuda_events: time regions with CUDA events (GPU time) instead of the host clock.
        nvtx: push an NVTX range per region (for ``nsys``/``ncu``; CUDA only).
        sample_memory: sample the resident set size at each region's edges (a ``/proc`` read:
            outside the timed span, but it lengthens the step, so only for memory steps).
        times: ``{region: [seconds, ...]}`` one entry per range closed (host clock or CUDA events,
            resolved by :meth:`resolve`).
        rss_peak: the largest resident set size sampled at a region's edges (bytes).
    """

    cuda_events: bool = False
    nvtx: bool = False
    sample_memory: bool = False
    times: dict[str, list[float]] = field(default_factory=dict)
    rss_peak: int = 0
    _pending: list[tuple[str, Any, Any]] = field(default_factory=list)

    def sample_rss(self) -> None:
        """Sample the resident memory (CPU runs: the peak of the step is read from these)."""
        self.rss_peak = max(self.rss_peak, _rss_bytes())

    def resolve(self) -> dict[str, list[float]]:
        """Turn recorded CUDA events into seconds (synchronises); returns :attr:`times`."""
        if self._pending:
            torch.cuda.synchronize()
            for name, start, end in self._pending:
                self.times.setdefault(name, []).append(start.elapsed_time(end) / 1000.0)
            self._pending.clear()
        return self.times

    def clear(self) -> None:
        """Forget everything recorded (between warm-up and the measured steps)."""
        self.resolve()
        self.times.clear()
        self.rss_peak = 0


@contextlib.contextmanager
def recording(recorder: RegionRecorder):  # type: ignore[no-untyped-def]
    """Install ``recorder`` for the duration of the block (one at a time)."""
    global _recorder
    if _recorder is not None:
        raise RuntimeError("a RegionRecorder is already installed")
    _recorder = recorder
    try:
        yield recorder
    finally:
        _recorder = None


class _Range:
    """One region's range: ``record_function`` (+ timing, NVTX, RSS sampling when recording)."""

    __slots__ = ("name", "_rf", "_t0", "_start", "_rec")

    def __init__(self, name: str) -> None:
        self.name = name
        self._rf: Any = None
        self._rec = _recorder

    def __enter__(self) -> _Range:
        # order: memory sample (outside the span), timer start, then the ranges, so that a
        # range's own cost under the profiler is counted in its region, not between regions
        rec = self._rec
        if rec is not None:
            if rec.sample_memory:
                rec.sample_rss()
            if rec.cuda_events:
                self._start = torch.cuda.Event(enable_timing=True)
                self._start.record()
            self._t0 = time.perf_counter()
            if rec.nvtx:
                torch.cuda.nvtx.range_push(PREFIX + self.name)
        if _profiler_active():
            self._rf = torch.autograd.profiler.record_function(PREFIX + self.name)
            self._rf.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._rf is not None:
            self._rf.__exit__(exc_type, exc, tb)
        rec = self._rec
        if rec is not None:
            if rec.nvtx:
                torch.cuda.nvtx.range_pop()
            if rec.cuda_events:
                end = torch.cuda.Event(enable_timing=True)
                end.record()
                rec._pending.append((self.name, self._start, end))
            else:
                rec.times.setdefault(self.name, []).append(time.perf_counter() - self._t0)
            if rec.sample_memory:
                rec.sample_rss()
