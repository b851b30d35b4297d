"""Engine benchmarks: training step time FT vs KD (teacher live vs cached), and inference
latency/throughput of teacher vs student. Not a test: numbers depend on the machine.

    python benchmarks/engine/bench_engine.py [--steps 30] [--out benchmarks/engine/results.json]
        [--set KEY=VALUE ...]       # overrides of the default run (same syntax as kdkit run)

Uses the default run's task, teacher and student (the code teacher is trained once and cached,
like the default job does). All ratios are measured in the same process, one after the other.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from kdkit.config import load_config
from kdkit.discovery import load_plugins
from kdkit.engine.batching import Encoder, batches_of, epoch_order, make_split, split_examples
from kdkit.engine.default_job import measure_inference
from kdkit.engine.loop import Trainer, TrainSetup
from kdkit.engine.runner import build_components, resolve_device
from kdkit.engine.teacher_cache import CacheSlot, LiveTeacher, TeacherPass, load_or_build


def step_times(trainer: Trainer, train, steps: int, batch_size: int) -> list[float]:
    """Seconds per optimisation step over ``steps`` steps (after one warm-up step)."""
    order = epoch_order(len(train), 0, 0)
    rows = list(batches_of(order, batch_size))
    trainer.train_step(rows[0])  # warm-up
    times = []
    for r in rows[1 : steps + 1]:
        t0 = time.perf_counter()
        trainer.train_step(r)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--out", default=str(Path(__file__).with_name("results.json")))
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    plugins = load_plugins()
    resolved = load_config(None, plugins.registry, args.overrides)
    cfg = resolved.run.training
    device = resolve_device(cfg.device)
    work = Path("/tmp/kdkit-bench-engine")
    c = build_components(resolved, device, work)
    is_pair = c.task.is_pair
    t0 = time.perf_counter()
    train = make_split(
        "train",
        c.splits["train"],
        is_pair,
        cfg.max_length,
        Encoder.of_student(c.student),
        Encoder.of_teacher(c.teacher),
    )
    tokenise_s = time.perf_counter() - t0
    val = make_split(
        "validation", c.splits["validation"], is_pair, cfg.max_length, Encoder.of_student(c.student)
    )
    ft_method = plugins.registry.get("kd_method", "ft")
    kd_comp = resolved.components["method"]
    results = {
        "machine": {
            "platform": platform.platform(),
            "threads": torch.get_num_threads(),
            "device": str(device),
        },
        "config": {
            "student": c.student.info.name,
            "student_parameters": c.student.info.num_parameters,
            "teacher": c.teacher.info.name,
            "teacher_parameters": c.teacher.info.num_parameters,
            "batch_size": cfg.batch_size,
            "max_length": cfg.max_length,
            "train_rows": len(train),
        },
        "tokenise_train_seconds": tokenise_s,
    }
    initial = copy.deepcopy(c.student.state_dict())
    modes = {}
    for mode in ("ft", "kd-live", "kd-cache"):
        c.student.load_state_dict(initial)
        if mode == "ft":
            method, signal = ft_method.build(ft_method.options({}), c.context), None
        else:
            method = kd_comp.component.build(kd_comp.options, c.context)
            if mode == "kd-live":
                signal = LiveTeacher(c.teacher, method.requirements.teacher, device)
            else:
                tc = time.perf_counter()
                root = Path(work) / "cache"
                job = TeacherPass(
                    c.teacher,
                    method.requirements.teacher,
                    train.teacher,
                    device,
                    2 * cfg.batch_size,
                    progress=False,
                )
                slot = CacheSlot("train", c.task.fingerprint(), cfg.max_length, root)
                signal = load_or_build(job, slot)
                results["teacher_cache_build_seconds"] = time.perf_counter() - tc
        trainer = Trainer(
            TrainSetup(
                student=c.student,
                method=method,
                task=c.task,
                train=train,
                validation=val,
                cfg=cfg,
                seed=0,
                device=device,
                run_dir=work,
                teacher_signal=signal,
                progress=False,
            )
        )
        times = step_times(trainer, train, args.steps, cfg.batch_size)
        modes[mode] = {
            "median_step_s": statistics.median(times),
            "mean_step_s": statistics.mean(times),
            "steps": len(times),
        }
        print(mode, modes[mode], flush=True)
    results["train_step"] = modes
    results["kd_cache_over_ft"] = modes["kd-cache"]["median_step_s"] / modes["ft"]["median_step_s"]
    results["kd_live_over_ft"] = modes["kd-live"]["median_step_s"] / modes["ft"]["median_step_s"]
    examples = split_examples(c.splits["test"], is_pair)
    teacher_inf = measure_inference(c.teacher, examples, cfg.max_length, device=device)
    c.student.eval()
    student_inf = measure_inference(c.student, examples, cfg.max_length, device=device)
    results["inference"] = {
        "teacher": teacher_inf,
        "student": student_inf,
        "latency_speedup": teacher_inf["latency_ms"] / student_inf["latency_ms"],
        "throughput_speedup": student_inf["throughput"] / teacher_inf["throughput"],
        "rows": len(examples),
    }
    print(json.dumps(results, indent=2))
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
