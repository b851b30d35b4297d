"""Efficiency of a study's models, measured in ONE process so that ratios are meaningful.

For every (task, teacher) and every (task, student) of the study:

* **parameters** — exact count of the model's parameters;
* **FLOPs per example** — ``torch.utils.flop_counter.FlopCounterMode`` over one forward pass of a
  batch of real test examples, each tokenised by the model's own tokenizer and truncated at the
  run's ``max_length`` (the mean tokens per example is reported as ``seq_len``), divided by the
  batch size;
* **latency** at batch 1 — median wall time of a forward pass (tokenisation excluded), over
  ``repeats`` examples after warm-up; **throughput** — examples/s of forward passes at batch
  ``throughput_batch``;
* **peak memory** of the throughput pass — on CUDA ``torch.cuda.max_memory_allocated``; on CPU
  the rise of the process's peak resident set size (Linux ``VmHWM`` after resetting it through
  ``/proc/self/clear_refs``), which counts every allocation including the allocator's caching;
* **ONNX Runtime** latency and throughput of every student, beside PyTorch's, when the ``onnx``
  extra is installed: the student is exported (:func:`kdkit.export.onnx.export_onnx`) to a
  temporary folder and its graph timed on the same tokenised examples, on the CPU (ONNX Runtime's
  CPU provider), batch 1 for latency and ``throughput_batch`` for throughput; the export's
  ``max_abs_diff`` against PyTorch is recorded too;
* **training time per epoch** — FT and every method of the grid, with the teacher cache and with
  the teacher run live, for one student per task: ``train_steps`` optimisation steps are timed
  (after one warm-up step) and extrapolated to the epoch's step count.

Students are the best checkpoints of finished runs; teachers are built from the cache exactly as
the runs built them. Results go to ``STUDY_DIR/efficiency.json``; the report reads them.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from kdkit.api import Needs
from kdkit.engine.persist import load_student
from kdkit.engine.summary import write_json
from kdkit.study.resolve import PlannedRun
from kdkit.study.results import run_status

if TYPE_CHECKING:  # pragma: no cover - import for type checkers only
    from kdkit.registry import Registry

EFFICIENCY_FILE = "efficiency.json"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _vm_hwm_kb() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure_model(
    forward: Callable[..., Any],
    encode: Callable[[list, int], Any],
    examples: list,
    max_length: int,
    device: torch.device,
    *,
    repeats: int = 20,
    batch: int = 32,
) -> dict[str, Any]:
    """Parameters aside, every inference number of one model (see the module docstring)."""
    from torch.utils.flop_counter import FlopCounterMode

    big = examples[:batch]
    enc = encode(big, max_length).to(device)
    seq_len = float(enc.attention_mask.sum(1).float().mean())
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            forward(enc)
        flops = counter.get_total_flops() / len(big)
        singles = [encode([e], max_length).to(device) for e in examples[: max(repeats, 1)]]
        for s in singles[:3]:
            forward(s)  # warm-up (allocator, lazy init)
        times = []
        for s in singles:
            _sync(device)
            t0 = time.perf_counter()
            forward(s)
            _sync(device)
            times.append(time.perf_counter() - t0)
        forward(enc)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base: int | None = torch.cuda.memory_allocated(device)
        else:
            reset = _reset_peak()
            base = _vm_hwm_kb() if reset else None
        runs = []
        for _ in range(3):
            _sync(device)
            t0 = time.perf_counter()
            forward(enc)
            _sync(device)
            runs.append(time.perf_counter() - t0)
        if device.type == "cuda":
            assert base is not None  # set by the CUDA branch above
            peak: float | None = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        else:
            after = _vm_hwm_kb()
            peak = (after - base) / 1024 if base is not None and after is not None else None
    return {
        "seq_len": round(seq_len, 1),
        "flops_per_example": flops,
        "latency_ms": 1000 * statistics.median(times),
        "throughput": len(big) / statistics.median(runs),
        "throughput_batch": len(big),
        "peak_memory_mb": peak,
    }


def measure_onnx(
    model: Any, examples: list, max_length: int, *, repeats: int = 20, batch: int = 32
) -> dict[str, Any]:
    """ONNX Runtime latency (batch 1, median ms) and throughput of ``model``'s exported graph.

    Empty when the ``onnx`` extra is missing or the model kind has no export; the model ends on
    the CPU. Keys: ``onnxruntime_latency_ms``, ``onnxruntime_throughput``, ``onnx_max_abs_diff``
    (or ``onnx_error`` when the export failed: the report says so instead of a number).
    """
    import tempfile

    from kdkit.errors import KdkitError
    from kdkit.export.onnx import export_onnx, onnx_available, ort_session, run_session

    if not onnx_available() or not hasattr(model, "export_module"):
        return {}
    big = examples[:batch]
    with tempfile.TemporaryDirectory(prefix="kdkit-onnx-") as tmp:
        try:
            result = export_onnx(
                model, Path(tmp) / "onnx", examples=big, max_length=max_length, time_it=False
            )
        except (KdkitError, RuntimeError, ValueError) as exc:  # reported, never fatal to a study
            return {"onnx_error": f"{type(exc).__name__}: {exc}"[:300]}
        session = ort_session(result.path)
        names = result.input_names
        enc = model.encode(big, max_length)
        singles = [model.encode([e], max_length) for e in examples[: max(repeats, 1)]]
        for one in singles[:3]:
            run_session(session, names, one)  # warm-up
        times = []
        for one in singles:
            t0 = time.perf_counter()
            run_session(session, names, one)
            times.append(time.perf_counter() - t0)
        run_session(session, names, enc)
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            run_session(session, names, enc)
            runs.append(time.perf_counter() - t0)
    return {
        "onnxruntime_latency_ms": 1000 * statistics.median(times),
        "onnxruntime_throughput": len(big) / statistics.median(runs),
        "onnx_max_abs_diff": result.max_abs_diff,
    }


def _examples(task: Any, splits: Any, n: int) -> list:
    test = splits["test"]
    n = min(n, len(test))
    if getattr(task, "is_pair", False):
        return list(zip(test["text"][:n], test["text_pair"][:n]))
    return list(test["text"][:n])


def _first_finished(runs: Sequence[PlannedRun], pick: Callable[..., bool]) -> PlannedRun | None:
    for run in sorted(runs, key=lambda r: (r.point.labels()["method"] != "ft", r.run_id)):
        if pick(run) and run_status(run.run_dir) == "complete":
            return run
    return None


def measure_inference(
    runs: Sequence[PlannedRun],
    *,
    repeats: int = 20,
    batch: int = 32,
    log: Callable[[str], None] = print,
    registry: Registry | None = None,
) -> list[dict[str, Any]]:
    """Inference numbers of every teacher and student of the study's finished runs (students are
    reloaded through ``registry``, default: the installed plugins)."""
    from kdkit.engine.runner import resolve_device
    from kdkit.study.teachers import build_task_and_teacher

    out = []
    for task_label in dict.fromkeys(r.point.labels()["task"] for r in runs):
        mine = [r for r in runs if r.point.labels()["task"] == task_label]
        any_run = mine[0]
        cfg = any_run.resolved.run
        device = resolve_device(cfg.training.device)
        max_len = cfg.training.max_length
        for teacher_label in dict.fromkeys(r.point.labels()["teacher"] for r in mine):
            trun = next(
                (
                    r
                    for r in mine
                    if r.point.labels()["teacher"] == teacher_label
                    and "teacher" in r.resolved.components
                ),
                None,
            )
            if trun is None:
                continue
            task, splits, teacher = build_task_and_teacher(trun)
            examples = _examples(task, splits, max(batch, repeats))
            log(f"efficiency: teacher {teacher_label} on {task_label}")
            m = measure_model(
                lambda e, t=teacher: t(e, Needs()),
                teacher.encode,
                examples,
                max_len,
                device,
                repeats=repeats,
                batch=batch,
            )
            out.append(
                {
                    "task": task_label,
                    "label": teacher_label,
                    "kind": "teacher",
                    "family": teacher.info.family,
                    "parameters": teacher.info.num_parameters,
                    **m,
                }
            )
        for student_label in dict.fromkeys(r.point.labels()["student"] for r in mine):
            srun = _first_finished(
                mine, lambda r, s=student_label: r.point.labels()["student"] == s
            )
            if srun is None:
                continue
            model = load_student(srun.run_dir / "best" / "model", registry).to(device).eval()
            log(f"efficiency: student {student_label} on {task_label} (from {srun.run_id})")
            m = measure_model(
                lambda e, s=model: s(e, Needs()),
                model.encode,
                examples,
                max_len,
                device,
                repeats=repeats,
                batch=batch,
            )
            m.update(measure_onnx(model, examples, max_len, repeats=repeats, batch=batch))
            out.append(
                {
                    "task": task_label,
                    "label": student_label,
                    "kind": "student",
                    "family": model.info.family,
                    "parameters": model.info.num_parameters,
                    **m,
                }
            )
    return out


def measure_training(
    runs: Sequence[PlannedRun],
    *,
    steps: int = 4,
    students_per_task: int = 1,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Seconds per training step (and per epoch, extrapolated) of every method, cache and live."""
    from kdkit.study.training_time import time_steps

    out = []
    for task_label in dict.fromkeys(r.point.labels()["task"] for r in runs):
        mine = [r for r in runs if r.point.labels()["task"] == task_label]
        students = list(dict.fromkeys(r.point.labels()["student"] for r in mine))[
            :students_per_task
        ]
        for student_label in students:
            cell = [
                r
                for r in mine
                if r.point.labels()["student"] == student_label
                and r.point.labels()["seed"] == mine[0].point.labels()["seed"]
            ]
            ft = None
            rows = []
            for run in sorted(cell, key=lambda r: r.point.labels()["method"] != "ft"):
                for signal in ("cache", "live"):
                    row = time_steps(run, signal, steps)
                    if row is None:
                        continue
                    log(
                        f"efficiency: training {task_label} {student_label} "
                        f"{row['method']} ({row['signal']}): {row['seconds_per_step']:.3f} s/step"
                    )
                    if row["signal"] == "none":
                        ft = ft or row["seconds_per_step"]
                    rows.append(row)
                    if row["signal"] == "none":
                        break
            for row in rows:
                row["ratio_to_ft"] = row["seconds_per_step"] / ft if ft else None
            out.extend(rows)
    return out


def measure_study(
    study_dir: Path,
    runs: Sequence[PlannedRun],
    *,
    repeats: int = 20,
    batch: int = 32,
    train_steps: int = 4,
    log: Callable[[str], None] = print,
    registry: Registry | None = None,
) -> Path:
    """Measure inference and training time of the study's models; write ``efficiency.json``.
    ``registry`` (the study's) reloads the students; default: the installed plugins."""
    if not runs:
        raise ValueError("no finished run to measure")
    device = runs[0].resolved.run.training.device
    threads = runs[0].resolved.run.training.num_threads if runs else None
    if threads:
        torch.set_num_threads(threads)
    models = measure_inference(runs, repeats=repeats, batch=batch, log=log, registry=registry)
    training = measure_training(runs, steps=train_steps, log=log) if train_steps else []
    notes = [
        "All numbers of this file come from one process, one model after another, on the same "
        "test examples; ratios between them are meaningful, absolute times depend on the machine "
        "and its load.",
        "Latency and throughput time the model's forward pass only (inputs already tokenised).",
        "onnxruntime_*: the student exported to ONNX (opset 18) and run by ONNX Runtime's CPU "
        "provider on the same examples (present when the onnx extra is installed).",
        "Peak memory on CPU: rise of the process's peak RSS (VmHWM) during the batched pass; on "
        "CUDA: torch.cuda.max_memory_allocated above the allocation before the pass.",
        f"Training time: {train_steps} timed optimisation steps after one warm-up step, "
        "extrapolated to steps per epoch; 'cache' reads teacher outputs from the teacher cache, "
        "'live' runs the teacher on each batch.",
    ]
    payload = {
        "device": str(device),
        "hardware": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "notes": notes,
        "models": models,
        "training": training,
    }
    path = Path(study_dir) / EFFICIENCY_FILE
    write_json(path, payload)
    return path
