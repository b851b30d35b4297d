"""Engine benchmarks: the training step time of every KD method relative to FT (the teacher
signal read from the cache, as a run reads it; KD and CKD also with the teacher live), and
inference latency/throughput of teacher vs student. Not a test: numbers depend on the machine.

    python benchmarks/engine/bench_engine.py [--quick] [--steps 30] [--rounds 3]
        [--methods ft kd ckd ...] [--out benchmarks/engine/results.json]
        [--set KEY=VALUE ...]       # overrides of the default run (same syntax as kdkit run)

Uses the default run's task, teacher and student (the code teacher is trained once and cached,
like the default job does). Every mode (FT, each method with the cache, the live references)
gets its own copy of the same initial student and the same batches. First every mode trains
``--warm-epochs`` untimed epochs (default 1), step by step in turns: a run's later epochs are
what most of its steps are, and a method may do per-example work once (``ckd`` keeps the
teacher's relations of each example after its first epoch); the median step of that first
epoch is reported too (``first_epoch_*``). Then the modes are timed in turns (``--rounds``
rounds of ``--steps`` steps each), so a change of machine load hits all of them alike. Each
ratio is the median over rounds of (the mode's median step / FT's median step in that round),
for process CPU time (all threads' work: robust on a shared machine) and for wall time.

The methods without token states share one cache entry holding the union of their needs (one
teacher pass instead of one per distinct need; each lookup copies a few more ``[B, H]`` rows than
the method's own entry would); each method with token states gets its own entry, as in a run.

``--quick`` = 2 rounds of 8 steps, 640 training rows (``task.max_train``) and a teacher trained
1 epoch on 32-token inputs: the teacher's weights and the number of rows do not change what one
step costs (its shape, the batch size and ``max_length`` do, and they are the default run's).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from kdkit import host_allocator
from kdkit.api import Needs, NoOptions
from kdkit.config import load_config
from kdkit.discovery import load_plugins
from kdkit.engine.batching import Encoder, batches_of, epoch_order, make_split, split_examples
from kdkit.engine.default_job import measure_inference
from kdkit.engine.loop import Trainer, TrainSetup
from kdkit.engine.runner import build_components, resolve_device, signal_kind
from kdkit.engine.teacher_cache import CacheSlot, LiveTeacher, TeacherPass, load_or_build
from kdkit.engine.topk_cache import LogitsFormat
from kdkit.errors import KdkitError
from kdkit.hookspecs import hookimpl
from kdkit.host_allocator import keep_freed_memory
from kdkit.testing.tiny import TinyTask, TinyTeacher

#: Methods also timed with the teacher running live (the cost the cache removes).
LIVE_REFERENCES = ("kd", "ckd")


class _TinyPlugin:
    """``--tiny``: registers kdkit.testing's tiny task and tiny frozen teacher."""

    @hookimpl
    def register_tasks(self, register):
        register("tiny", lambda o, c: TinyTask(), config=NoOptions, description="tiny task")

    @hookimpl
    def register_teachers(self, register):
        register("tiny-teacher", lambda o, c: TinyTeacher(), config=NoOptions, description="tiny")


def _tokens(method) -> bool:
    """Whether a method asks the teacher for token states."""
    needs = method.requirements.teacher
    return needs is not None and bool(needs.hidden_layers)


def timed_steps(trainer: Trainer, rows: list[list[int]]) -> tuple[list[float], list[float]]:
    """(process CPU seconds, wall seconds) of one optimisation step per batch of ``rows``."""
    cpu, wall = [], []
    for r in rows:
        c0, w0 = time.process_time(), time.perf_counter()
        trainer.train_step(r)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return cpu, wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30, help="timed steps per mode and round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of turns over the modes")
    ap.add_argument("--quick", action="store_true", help="2 rounds x 8 steps, 1-epoch teacher")
    ap.add_argument("--methods", nargs="*", help="methods to time (default: every registered)")
    ap.add_argument("--out", default=str(Path(__file__).with_name("results.json")))
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--work", default="/tmp/kdkit-bench-engine", help="scratch directory")
    ap.add_argument(
        "--threads",
        type=int,
        help="torch threads (1 on a shared machine: idle threads spin and their CPU time counts)",
    )
    ap.add_argument("--no-live", action="store_true", help="skip the live-teacher references")
    ap.add_argument(
        "--warm-epochs",
        type=int,
        default=1,
        help="untimed epochs before the timed rounds (0: one warm-up step only)",
    )
    ap.add_argument("--no-inference", action="store_true", help="skip teacher/student inference")
    ap.add_argument(
        "--malloc-tuning",
        action=argparse.BooleanOptionalAction,
        default=host_allocator.requested(),
        help="raise glibc's malloc thresholds first, as the kdkit command does unless "
        "KDKIT_MALLOC_TUNING=0 (kdkit.host_allocator; default: what the command would do)",
    )
    ap.add_argument(
        "--tiny",
        action="store_true",
        help="kdkit.testing's tiny task (48 stdlib functions) and tiny teacher instead of the "
        "default run's: no dataset build, no teacher training (a smoke run, or a machine "
        "too loaded for the real one); the student, batch and max_length stay the default's",
    )
    args = ap.parse_args()
    if args.quick:
        args.steps, args.rounds = min(args.steps, 8), min(args.rounds, 2)
        args.overrides = [
            "teacher.training.epochs=1",
            "teacher.training.max_length=32",
            "task.max_train=640",
            *args.overrides,
        ]
    if args.threads:
        torch.set_num_threads(args.threads)
    # what the kdkit command does at start unless KDKIT_MALLOC_TUNING=0 (kdkit.host_allocator)
    malloc_tuned = keep_freed_memory() if args.malloc_tuning else False
    plugins = load_plugins(extra=[("bench-tiny", _TinyPlugin())] if args.tiny else ())
    if args.tiny:
        args.overrides = ["task=tiny", "teacher=tiny-teacher", *args.overrides]
    resolved = load_config(None, plugins.registry, args.overrides)
    cfg = resolved.run.training
    device = resolve_device(cfg.device)
    work = Path(args.work)
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
    cached_train = dataclasses.replace(train, teacher=None)  # what a cached run trains on
    val = make_split(
        "validation", c.splits["validation"], is_pair, cfg.max_length, Encoder.of_student(c.student)
    )
    results = {
        "machine": {
            "platform": platform.platform(),
            "threads": torch.get_num_threads(),
            "device": str(device),
            "malloc_tuned": malloc_tuned,
        },
        "config": {
            "student": c.student.info.name,
            "student_parameters": c.student.info.num_parameters,
            "teacher": c.teacher.info.name,
            "teacher_parameters": c.teacher.info.num_parameters,
            "batch_size": cfg.batch_size,
            "max_length": cfg.max_length,
            "train_rows": len(train),
            "token_states": resolved.run.cache.token_states,
            "steps": args.steps,
            "rounds": args.rounds,
            "warm_epochs": args.warm_epochs,
            "overrides": args.overrides,
        },
        "tokenise_train_seconds": tokenise_s,
    }
    names = args.methods or plugins.registry.names("kd_method")
    configured = resolved.components["method"]
    initial = copy.deepcopy(c.student.state_dict())
    cache_root = work / "cache"
    trainers: dict[str, Trainer] = {}
    signals: dict[str, str] = {}
    builds: dict[str, float] = {}
    entries: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    modes = ["ft", *[n for n in names if n != "ft"]]
    modes += [f"{n}-live" for n in LIVE_REFERENCES if n in names and not args.no_live]
    built = {}
    for mode in modes:
        name, live = mode.removesuffix("-live"), mode.endswith("-live")
        comp = plugins.registry.get("kd_method", name)
        options = configured.options if name == configured.component.name else comp.options({})
        student = copy.deepcopy(c.student)
        student.load_state_dict(initial)
        try:
            method = comp.build(options, c.context)
        except KdkitError as exc:  # a method that cannot pair these models: say so, go on
            skipped[mode] = exc.what
            continue
        needs = method.requirements.teacher
        built[mode] = (student, method, "live" if live else signal_kind(needs, resolved.run.cache))
    shared = [m for m, (_, meth, k) in built.items() if k == "cache" and not _tokens(meth)]
    union = Needs()
    for mode in shared:
        union = union.union(built[mode][1].requirements.teacher)

    def cached(needs: Needs, mode: str):
        tc = time.perf_counter()
        job = TeacherPass(c.teacher, needs, train.teacher, device, 2 * cfg.batch_size, False)
        slot = CacheSlot(
            "train",
            c.task.fingerprint(),
            cfg.max_length,
            cache_root,
            token_states=resolved.run.cache.token_states,
            logits=LogitsFormat.of(resolved.run.cache),  # --set cache.logits=topk is honoured
        )
        signal = load_or_build(job, slot)
        builds[mode] = time.perf_counter() - tc
        entries[mode] = signal.directory
        return signal

    union_signal = cached(union, "+".join(shared)) if shared else None
    for mode, (student, method, kind) in built.items():
        needs = method.requirements.teacher
        signal = None
        if kind == "live":
            signal = LiveTeacher(c.teacher, needs, device)
        elif kind == "cache":
            signal = union_signal if mode in shared else cached(needs, mode)
        signals[mode] = kind or "none"
        trainers[mode] = Trainer(
            TrainSetup(
                student=student,
                method=method,
                task=c.task,
                train=train if kind == "live" else cached_train,
                validation=val,
                cfg=cfg,
                seed=0,
                device=device,
                run_dir=work / mode,
                teacher_signal=signal,
                progress=False,
            )
        )
    per_epoch = -(-len(train) // cfg.batch_size)
    needed = args.rounds * args.steps
    epochs = [
        list(batches_of(epoch_order(len(train), 0, e), cfg.batch_size))
        for e in range(args.warm_epochs + -(-needed // per_epoch))
    ]
    warm = [rows for e in epochs[: args.warm_epochs] for rows in e] or [epochs[0][0]]
    timed = [rows for e in epochs[args.warm_epochs :] for rows in e][:needed]
    first_epoch: dict[str, list[float]] = {m: [] for m in trainers}
    for i, rows in enumerate(warm):  # the modes in turns, one step each
        for mode, trainer in trainers.items():
            first_epoch[mode] += timed_steps(trainer, [rows])[0]
        if (i + 1) % 20 == 0 or i + 1 == len(warm):
            print(f"warm-up: {i + 1}/{len(warm)} steps per mode", flush=True)
    per_round: dict[str, list[dict[str, float]]] = {m: [] for m in trainers}
    for r in range(args.rounds):
        rows = timed[r * args.steps : (r + 1) * args.steps]
        for mode, trainer in trainers.items():
            cpu, wall = timed_steps(trainer, rows)
            per_round[mode].append(
                {"cpu_s": statistics.median(cpu), "wall_s": statistics.median(wall)}
            )
            print(
                f"round {r}: {mode:<16} cpu {per_round[mode][-1]['cpu_s'] * 1e3:8.1f} ms "
                f"wall {per_round[mode][-1]['wall_s'] * 1e3:8.1f} ms",
                flush=True,
            )
    table = {}
    modes = list(trainers)
    for mode in modes:
        ratio = {
            k: statistics.median(
                p[f"{k}_s"] / f[f"{k}_s"] for p, f in zip(per_round[mode], per_round["ft"])
            )
            for k in ("cpu", "wall")
        }
        table[mode] = {
            "teacher_signal": signals[mode],
            "median_step_cpu_s": statistics.median(p["cpu_s"] for p in per_round[mode]),
            "median_step_wall_s": statistics.median(p["wall_s"] for p in per_round[mode]),
            "over_ft_cpu": ratio["cpu"],
            "over_ft_wall": ratio["wall"],
            "rounds": per_round[mode],
        }
        if args.warm_epochs:
            first = statistics.median(first_epoch[mode])
            table[mode]["first_epoch_step_cpu_s"] = first
            table[mode]["first_epoch_over_ft_cpu"] = first / statistics.median(first_epoch["ft"])
    results["train_step"] = table
    results["over_ft"] = {m: round(t["over_ft_cpu"], 3) for m, t in table.items()}
    if args.warm_epochs:
        results["first_epoch_over_ft"] = {
            m: round(t["first_epoch_over_ft_cpu"], 3) for m, t in table.items()
        }
    results["skipped"] = skipped
    results["cache_build_seconds"] = builds
    results["token_cache"] = {
        mode: meta["token_states"]
        for mode, d in entries.items()
        if "token_states" in (meta := json.loads((d / "meta.json").read_text()))
    }
    print(json.dumps(results["over_ft"], indent=2), flush=True)
    if args.no_inference:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
        return
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
