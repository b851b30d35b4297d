"""``kdkit profile``: build a run exactly as ``kdkit run`` does, then profile its training steps.

The run is built by the runner's own functions (:func:`~kdkit.engine.runner.build_components`,
:func:`~kdkit.engine.runner.prepare`: same validation, same teacher signal, cached or live) and
trained by the engine's own :meth:`~kdkit.engine.loop.Trainer.train_step`; nothing is evaluated,
checkpointed or written to the run's ``output_dir``. Per kernel implementation it runs ``warmup``
steps, then ``steps`` measured steps under ``torch.profiler`` with a
:class:`~kdkit.profiling.regions.RegionRecorder` timing the engine's named regions.
"""

from __future__ import annotations

import gc
import json
import math
import os
import resource
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kdkit import kernels
from kdkit.config import ResolvedConfig
from kdkit.discovery import Plugins
from kdkit.engine.batching import batches_of, epoch_order
from kdkit.engine.distributed import Dist
from kdkit.engine.loop import Trainer, TrainSetup
from kdkit.engine.runner import (
    RunEnv,
    build_components,
    holds_progress,
    prepare,
    resolve_device,
    signal_kind,
)
from kdkit.engine.seeding import seed_everything
from kdkit.errors import KdkitError
from kdkit.kernels import dispatch
from kdkit.profiling.regions import PREFIX, REGIONS, RegionRecorder, _rss_bytes, recording

#: The summary file a profile directory holds (its presence marks a directory as a profile's).
SUMMARY = "profile.json"


@dataclass
class ProfileOptions:
    """What ``kdkit profile`` measures.

    Attributes:
        steps: measured training steps per implementation (> 0).
        warmup: un-measured steps before them (>= 0; allocator, autotuning, first-call costs).
        impls: kernel implementations to compare (``None``: the run's ``kernels.impl``).
        out: the profile directory (``None``: a fresh ``profiles/<task>-<method>-<student>``).
        capture_step: CUDA only: bracket one step (after the warm-up) with
            ``cudaProfilerStart``/``Stop`` for ``nsys``/``ncu``; ``torch.profiler`` is then off.
        top: how many operators the operator table lists.
    """

    steps: int = 10
    warmup: int = 3
    impls: list[str] | None = None
    out: Path | None = None
    capture_step: bool = False
    top: int = 12


def parse_impls(text: str) -> list[str]:
    """``"reference,triton"`` -> ``["reference", "triton"]`` (checked against kernels.IMPLS)."""
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    bad = [n for n in names if n not in kernels.IMPLS]
    if not names or bad:
        raise KdkitError(
            f"--compare-impl {text!r}: unknown implementation(s) {bad or '(none)'}",
            where="--compare-impl",
            fix=f"a comma-separated list of: {', '.join(kernels.IMPLS)}",
        )
    if len(set(names)) != len(names):
        raise KdkitError(
            f"--compare-impl {text!r} names an implementation twice",
            where="--compare-impl",
            fix="name each implementation once",
        )
    return names


def check_counts(options: ProfileOptions) -> None:
    """Refuse step counts that cannot give a profile (exit 2)."""
    if options.steps <= 0:
        raise KdkitError(
            f"--steps must be at least 1 (got {options.steps})",
            where="--steps",
            fix="e.g. --steps 10",
        )
    if options.warmup < 0:
        raise KdkitError(
            f"--warmup cannot be negative (got {options.warmup})",
            where="--warmup",
            fix="e.g. --warmup 3 (0: no warm-up)",
        )


def check_options(options: ProfileOptions, device: torch.device) -> None:
    """Refuse options that cannot give a profile on ``device`` (exit 2), before anything is built."""
    check_counts(options)
    if options.capture_step and device.type != "cuda":
        raise KdkitError(
            "--capture-step brackets a step with the CUDA profiler API, but the run "
            f"computes on {device}",
            where="--capture-step",
            fix="run on a GPU (training.device: cuda), or drop --capture-step",
        )
    env = os.environ.get(dispatch.ENV_VAR, "").strip()
    if options.impls and env:
        raise KdkitError(
            f"{dispatch.ENV_VAR}={env} overrides every implementation --compare-impl asks for",
            where=dispatch.ENV_VAR,
            fix=f"unset {dispatch.ENV_VAR} for the comparison",
        )
    for impl in options.impls or []:
        if impl != "triton":
            continue
        blocker = dispatch.triton_blocker([torch.empty(1, device=device)], None)
        if blocker is not None:
            raise KdkitError(
                f"the Triton implementation cannot run on {device}: {blocker}",
                where="--compare-impl",
                fix="profile on a CUDA device with Triton installed, set "
                "TRITON_INTERPRET=1 for a functional (not a timing) comparison on "
                "CPU, or compare only implementations that run here "
                "(--compare-impl reference)",
            )


def profile_dir(resolved: ResolvedConfig, out: Path | None) -> Path:
    """The directory the profile writes; never a run directory's results.

    ``out`` may be missing, empty, or an earlier profile (it holds ``profile.json``); a directory
    that holds a run (``config.yaml``, checkpoints, models, metrics, a summary) or anything else
    is refused. Without ``out``: ``profiles/<task>-<method>-<student>`` (``-2``, ``-3``... beside
    it when it exists).
    """
    if out is None:
        names = {s: r.component.name for s, r in resolved.components.items()}
        base = Path("profiles") / f"{names['task']}-{names['method']}-{names['student']}"
        out, n = base, 1
        while out.exists():
            n += 1
            out = base.with_name(f"{base.name}-{n}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise KdkitError(
            "the profile output is a file", where=str(out), fix="choose a directory with --out DIR"
        )
    if out.is_dir():
        if (out / "config.yaml").exists() or holds_progress(out):
            raise KdkitError(
                "--out is a run directory: a profile never writes into a run's results",
                where=str(out),
                fix="choose another directory with --out DIR (default: a fresh "
                "profiles/<task>-<method>-<student>)",
            )
        if any(out.iterdir()) and not (out / SUMMARY).exists():
            raise KdkitError(
                "--out exists and is neither empty nor an earlier profile",
                where=str(out),
                fix="choose a new or empty directory with --out DIR",
            )
    out.mkdir(parents=True, exist_ok=True)
    return out


def _batch_rows(n: int, seed: int, batch_size: int) -> Iterator[list[int]]:
    """The training batches in the order ``kdkit run`` takes them, epoch after epoch."""
    epoch = 0
    while True:
        yield from batches_of(epoch_order(n, seed, epoch), batch_size)
        epoch += 1


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _self_time_us(evt: Any, cuda: bool) -> float:
    """An operator's self time (µs): device time on CUDA, else CPU time."""
    if cuda:
        for name in ("self_device_time_total", "self_cuda_time_total"):
            if hasattr(evt, name):
                return float(getattr(evt, name))
    return float(evt.self_cpu_time_total)


def top_operators(prof: Any, n: int, steps: int, cuda: bool) -> list[dict[str, Any]]:
    """The ``n`` operators with the largest self time (per step), the region ranges left out."""
    rows = []
    for evt in prof.key_averages():
        if evt.key.startswith(PREFIX) or evt.key.startswith("ProfilerStep"):
            continue
        rows.append(
            {
                "name": evt.key,
                "calls_per_step": evt.count / steps,
                "self_ms_per_step": _self_time_us(evt, cuda) / 1000.0 / steps,
                "self_cpu_ms_per_step": float(evt.self_cpu_time_total) / 1000.0 / steps,
            }
        )
    rows.sort(key=lambda r: r["self_ms_per_step"], reverse=True)
    total = sum(r["self_ms_per_step"] for r in rows) or 1.0
    for r in rows:
        r["share_of_op_time"] = r["self_ms_per_step"] / total
    return rows[:n]


def _restore(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    module.load_state_dict(state)


class _Session:
    """The built run, shared by every implementation profiled in this process."""

    def __init__(self, resolved: ResolvedConfig, out: Path, progress: bool) -> None:
        cfg = resolved.run.training
        self.resolved, self.out = resolved, out
        self.device = resolve_device(cfg.device)
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        self.env = RunEnv(resolved, out, self.device, Dist(), progress)
        t0 = time.perf_counter()
        self.c = build_components(resolved, self.device, out, progress)
        self.kind = signal_kind(self.c.method.requirements.teacher, resolved.run.cache)
        self.prep = prepare(self.c, self.env, self.kind, test=False)
        self.build_seconds = time.perf_counter() - t0
        # every implementation starts from the same weights
        self.student0 = {k: v.detach().clone() for k, v in self.c.student.state_dict().items()}
        self.method0 = {k: v.detach().clone() for k, v in self.c.method.state_dict().items()}

    def trainer(self) -> Trainer:
        """A fresh trainer (new optimizer and schedule) over the initial weights."""
        _restore(self.c.student, self.student0)
        _restore(self.c.method, self.method0)
        seed_everything(self.resolved.run.seed)
        return Trainer(
            TrainSetup(
                student=self.c.student,
                method=self.c.method,
                task=self.c.task,
                train=self.prep.train,
                validation=self.prep.validation,
                cfg=self.resolved.run.training,
                seed=self.resolved.run.seed,
                device=self.device,
                run_dir=self.out,
                teacher_signal=self.prep.signal,
                progress=False,
            )
        )


def _step(trainer: Trainer, rows: list[int]) -> dict[str, float]:
    record = trainer.train_step(rows)
    trainer.state.step += 1
    return record


def _memory_step(trainer: Trainer, rows: list[int], device: torch.device) -> dict[str, Any]:
    """Peak memory of one step, outside ``torch.profiler`` (its event buffers would count).

    CPU: the resident set's rise above its size before the step, sampled at every region's
    edges (and the process's all-time peak RSS when the step raised it). CUDA: the caching
    allocator's maximum allocated bytes during the step.
    """
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        cuda_start = torch.cuda.memory_allocated(device)
    gc.collect()
    rss_start, maxrss_start = _rss_bytes(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    recorder = RegionRecorder(cuda_events=cuda, sample_memory=True)
    with recording(recorder):
        _step(trainer, rows)
        recorder.resolve()
    peak = recorder.rss_peak
    maxrss_end = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if maxrss_end > maxrss_start:  # the all-time peak rose during the step: it is the step's
        peak = max(peak, maxrss_end * 1024)
    memory: dict[str, Any] = {
        "rss_start_bytes": rss_start,
        "rss_peak_bytes": peak,
        "rss_rise_bytes": max(0, peak - rss_start),
    }
    if cuda:
        memory["cuda_start_allocated_bytes"] = cuda_start
        memory["cuda_max_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
        memory["cuda_rise_bytes"] = memory["cuda_max_allocated_bytes"] - cuda_start
    return memory


def profile_impl(session: _Session, impl: str | None, options: ProfileOptions) -> dict[str, Any]:
    """Warm-up and measured steps with one implementation; its part of the summary."""
    device, cuda = session.device, session.device.type == "cuda"
    label = impl or session.resolved.run.kernels.impl
    kernels.set_default_impl(impl or session.resolved.run.kernels.impl)
    kernels.reset_last_impls()
    gc.collect()
    trainer = session.trainer()
    cfg = session.resolved.run.training
    batches = _batch_rows(len(session.prep.train), session.resolved.run.seed, cfg.batch_size)
    for _ in range(options.warmup):
        _step(trainer, next(batches))
    _sync(device)
    captured = None
    recorder = RegionRecorder(cuda_events=cuda, nvtx=cuda)
    if options.capture_step:  # one step for nsys/ncu: cudaProfilerStart ... cudaProfilerStop
        with recording(RegionRecorder(cuda_events=True, nvtx=True)):
            torch.cuda.profiler.start()
            _step(trainer, next(batches))
            _sync(device)
            torch.cuda.profiler.stop()
        captured = trainer.state.step
    memory = _memory_step(trainer, next(batches), device)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    step_s: list[float] = []
    losses: list[float] = []  # the same batches and weights for every impl: these must agree
    prof = None
    with recording(recorder):
        ctx = torch.profiler.profile(activities=activities) if not options.capture_step else None
        if ctx is not None:
            prof = ctx.__enter__()
        try:
            for _ in range(options.steps):
                rows = next(batches)
                if cuda:
                    start, end = (
                        torch.cuda.Event(enable_timing=True),
                        torch.cuda.Event(enable_timing=True),
                    )
                    start.record()
                    losses.append(_step(trainer, rows)["loss"])
                    end.record()
                    end.synchronize()
                    step_s.append(start.elapsed_time(end) / 1000.0)
                else:
                    t0 = time.perf_counter()
                    losses.append(_step(trainer, rows)["loss"])
                    step_s.append(time.perf_counter() - t0)
        finally:
            if ctx is not None:
                ctx.__exit__(None, None, None)
        times = recorder.resolve()
    n = options.steps
    step_ms = 1000.0 * sum(step_s) / n
    regions = {}
    for name in REGIONS:
        if name in times:
            ms = 1000.0 * sum(times[name]) / n
            regions[name] = {"ms_per_step": ms, "share": ms / step_ms if step_ms else 0.0}
    attributed = sum(r["ms_per_step"] for r in regions.values())
    trace = None
    ops: list[dict[str, Any]] = []
    if prof is not None:
        trace = session.out / f"trace-{label}.json"
        prof.export_chrome_trace(str(trace))
        ops = top_operators(prof, options.top, n, cuda)
    ran = kernels.last_impls()
    return {
        "impl": label,
        "dispatch": ran,
        "timing": "cuda-events" if cuda else "host-clock",
        "step_ms": {
            "mean": step_ms,
            "median": 1000.0 * statistics.median(step_s),
            "min": 1000.0 * min(step_s),
            "all": [1000.0 * s for s in step_s],
        },
        "regions": regions,
        "unattributed_ms_per_step": step_ms - attributed,
        "coverage": attributed / step_ms if step_ms else math.nan,
        "loss_share": regions.get("loss_forward", {}).get("share", 0.0),
        "memory": memory,
        "losses": losses,
        "top_operators": ops,
        "trace": str(trace) if trace else None,
        "captured_step": captured,
        "interpreted": bool(device.type == "cpu" and "triton" in ran.values()),
    }


def profile_run(
    resolved: ResolvedConfig, plugins: Plugins, options: ProfileOptions, *, progress: bool = False
) -> dict[str, Any]:
    """Profile ``resolved``'s training steps; writes ``profile.json``, the traces and the plot.

    Returns the summary (the content of ``profile.json``).

    Raises:
        KdkitError: bad options, an implementation that cannot run on the device, a profile
            directory that is a run's.
    """
    device = resolve_device(resolved.run.training.device)
    check_options(options, device)
    out = profile_dir(resolved, options.out)
    session = _Session(resolved, out, progress)
    impls: list[str | None] = [*options.impls] if options.impls else [None]  # None: kernels.impl
    results = [profile_impl(session, impl, options) for impl in impls]
    names = {s: r.component.name for s, r in resolved.components.items()}
    summary: dict[str, Any] = {
        "run": {
            "source": resolved.source or "<embedded default run>",
            **names,
            "seed": resolved.run.seed,
            "batch_size": resolved.run.training.batch_size,
            "max_length": resolved.run.training.max_length,
        },
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "teacher_signal": session.kind,
        "precision": _precision(resolved, device),
        "steps": options.steps,
        "warmup": options.warmup,
        "build_seconds": session.build_seconds,
        "results": results,
        "ratios": ratios(results),
        "notes": notes(results, device),
    }
    from kdkit.profiling.report import write_outputs

    write_outputs(summary, out)
    kernels.set_default_impl(resolved.run.kernels.impl)
    return summary


def _precision(resolved: ResolvedConfig, device: torch.device) -> str:
    from kdkit.engine.loop import precision_context

    return precision_context(device, resolved.run.training.precision)[1]


def ratios(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each implementation's step time and peak memory over the first one's (same process)."""
    if len(results) < 2:
        return []
    base = results[0]
    key = "cuda_rise_bytes" if "cuda_rise_bytes" in base["memory"] else "rss_rise_bytes"
    out = []
    for r in results[1:]:
        b_mem, r_mem = base["memory"][key], r["memory"][key]
        out.append(
            {
                "impl": r["impl"],
                "over": base["impl"],
                "step_time": r["step_ms"]["mean"] / base["step_ms"]["mean"],
                "memory": (r_mem / b_mem) if b_mem else None,
                "memory_measure": key,
            }
        )
    return out


def notes(results: list[dict[str, Any]], device: torch.device) -> list[str]:
    """What the reader must know before reading the numbers."""
    out = []
    if any(r["interpreted"] for r in results):
        out.append(
            "the Triton kernels ran in the CPU interpreter (TRITON_INTERPRET=1): their "
            "CPU timings mean nothing; this comparison is functional only"
        )
    if any(not r["dispatch"] for r in results):
        out.append("the method called no fused kernel op: every implementation runs the same code")
    if device.type == "cpu":
        out.append(
            "CPU: regions timed with the host clock under torch.profiler (which adds "
            "per-operator overhead); memory is the resident set's rise, sampled at the "
            "region edges"
        )
        if len(results) > 1:
            out.append(
                "CPU memory of later implementations is measured after the earlier ones "
                "in the same process (the allocator keeps what it freed)"
            )
    return out


def dumps(summary: dict[str, Any]) -> str:
    """The summary as indented JSON."""
    return json.dumps(summary, indent=2, sort_keys=False)
