"""One run, from a resolved configuration to a run directory with a summary.

config -> components (task, data, student, teacher, method) -> tokenised splits -> teacher signal
(cache or live) -> :class:`kdkit.engine.loop.Trainer` -> best student on validation and test ->
saved student, predictions, summary. Reporters and lifecycle hooks see every event.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kdkit.api import BuildContext, Needs, RunInfo
from kdkit.config import ResolvedConfig
from kdkit.engine.batching import SplitData, make_split
from kdkit.engine.checkpoint import read_checkpoint, write_model
from kdkit.engine.distributed import Dist, setup
from kdkit.engine.loop import Trainer, predict_logits
from kdkit.engine.persist import atomic_write_text, load_student
from kdkit.engine.seeding import seed_everything
from kdkit.engine.summary import run_table, versions, write_json
from kdkit.engine.teacher_cache import LiveTeacher, cacheable, load_or_build
from kdkit.engine.tokenization import default_cache_dir
from kdkit.errors import KdkitError, NonFiniteLossError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise KdkitError(f"unknown device {name!r}", where="training.device",
                         fix="use auto, cpu, cuda or cuda:N") from None  # fmt: skip
    if device.type == "cuda" and not torch.cuda.is_available():
        raise KdkitError("training.device asks for CUDA but no GPU is visible",
                         where="training.device", fix="set training.device: cpu (or auto)")  # fmt: skip
    return device


@dataclass
class Components:
    """The built components of a run."""

    task: Any
    splits: Any
    student: Any
    teacher: Any
    method: Any
    context: BuildContext


def build_components(resolved: ResolvedConfig, device: torch.device, run_dir: Path,
                     progress: bool = True) -> Components:  # fmt: skip
    """Build task (and load its data), student, teacher and method, in that order."""
    run = resolved.run
    cache_dir = str(default_cache_dir(run.cache.dir))
    ctx = BuildContext(device=device, seed=run.seed, cache_dir=cache_dir, run_dir=str(run_dir),
                       kernel_impl=run.kernels.impl, max_length=run.training.max_length,
                       extra={"progress": progress})  # fmt: skip
    comps = resolved.components
    task = comps["task"].component.build(comps["task"].options, ctx)
    ctx.task = task
    ctx.splits = splits = task.load()
    seed_everything(run.seed)  # the student's initial weights depend on the seed only
    student = comps["student"].component.build(comps["student"].options, ctx)
    student.to(device)
    ctx.student = student.info
    teacher = None
    method_comp = comps["method"]
    if "teacher" in comps:
        teacher = comps["teacher"].component.build(comps["teacher"].options, ctx)
        ctx.teacher = teacher.info
        if hasattr(teacher, "to"):
            teacher.to(device)
    seed_everything(run.seed + 1)  # projections: independent of how the teacher was obtained
    method = method_comp.component.build(method_comp.options, ctx)
    method.to(device)
    if method.requires_teacher and teacher is None:
        raise KdkitError(f"method '{method_comp.component.name}' needs a teacher",
                         where="teacher", fix="add a teacher section (e.g. `teacher: code-teacher`) "
                         "or use method: ft")  # fmt: skip
    return Components(task, splits, student, teacher, method, ctx)


def _pad_id(model: Any) -> int:
    tok = getattr(model, "tokenizer", None)
    pad = getattr(tok, "pad_token_id", None)
    return int(pad) if pad is not None else 0


#: What a run directory holds once training has produced something worth keeping.
PROGRESS_FILES = ("checkpoints", "best", "last", "metrics.jsonl", "summary.json")


def holds_progress(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds training results (a checkpoint, a model, metrics, a summary).

    A directory with only the ``config.yaml``/``versions.json`` of an attempt that stopped before
    training (a missing teacher, a typo in a path) holds nothing of the user's: a new
    ``kdkit run`` may start there again instead of forcing the user to delete it.
    """
    return any((run_dir / name).exists() for name in PROGRESS_FILES)


def prepare_run_dir(resolved: ResolvedConfig, resume: str | None) -> Path:
    """The run directory; refuses to overwrite a run that exists (nothing is ever deleted)."""
    if resume:
        run_dir = Path(resume)
        if not (run_dir / "config.yaml").is_file():
            raise KdkitError("not a kdkit run directory (no config.yaml)", where=str(run_dir),
                             fix="pass the output_dir of a run started with `kdkit run`")  # fmt: skip
        return run_dir
    run_dir = resolved.output_dir()
    if (run_dir / "config.yaml").exists() and holds_progress(run_dir):
        raise KdkitError(
            "the run directory already holds a run",
            where=str(run_dir),
            fix=f"continue it with `kdkit run --resume {run_dir}`, or choose another directory "
            "with --set output_dir=...",
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def run(resolved: ResolvedConfig, plugins: Any, resume: str | None = None, *,
        progress: bool = True) -> int:  # fmt: skip
    """Run one configuration; returns the exit status (0). See :func:`run_once` for the summary."""
    run_once(resolved, plugins, resume=resume, progress=progress)
    return 0


def run_once(resolved: ResolvedConfig, plugins: Any, resume: str | None = None, *,
             progress: bool = True) -> dict[str, Any]:  # fmt: skip
    """Run one configuration and return its summary (also written to ``summary.json``).

    Started by ``torchrun`` (``WORLD_SIZE > 1``), it runs data-parallel across the processes
    (``training.distributed``, docs/distributed.md); every rank returns the same summary and only
    rank 0 writes files and reports.
    """
    dist, device_name = setup(resolved.run.training.distributed, resolved.run.training.device)
    try:
        return _run_once(resolved, plugins, resume, progress and dist.is_main, dist, device_name)
    finally:
        dist.close()


def _run_once(resolved: ResolvedConfig, plugins: Any, resume: str | None, progress: bool,
              dist: Dist, device_name: str) -> dict[str, Any]:  # fmt: skip
    run_cfg, cfg = resolved.run, resolved.run.training
    run_dir = Path(dist.on_main(lambda: str(prepare_run_dir(resolved, resume))))
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = resolve_device(device_name)
    from kdkit import kernels

    kernels.set_default_impl(run_cfg.kernels.impl)
    kernels.reset_last_impls()
    if not resume and dist.is_main:
        atomic_write_text(run_dir / "config.yaml", resolved.to_yaml())
        write_json(run_dir / "versions.json", versions(plugins))
    t_build = time.perf_counter()
    with dist.main_first():  # rank 0 fills the caches (data, tokenizers, teachers) first
        c = build_components(resolved, device, run_dir, progress)
    req = c.method.requirements
    is_pair = bool(getattr(c.task, "is_pair", False))
    max_len = cfg.max_length
    # the teacher runs live only when a method needs what the cache does not hold
    teacher_needs: Needs | None = req.teacher
    use_cache = bool(
        teacher_needs is not None and run_cfg.cache.enabled and cacheable(teacher_needs)
    )
    live = teacher_needs is not None and not use_cache
    teacher_encode = c.teacher.encode if c.teacher is not None else None
    train = make_split("train", c.splits["train"], is_pair, max_len, c.student.encode,
                       _pad_id(c.student), teacher_encode if teacher_needs is not None else None,
                       _pad_id(getattr(c.teacher, "model", None)))  # fmt: skip
    validation = make_split("validation", c.splits["validation"], is_pair, max_len,
                            c.student.encode, _pad_id(c.student))  # fmt: skip
    test = make_split("test", c.splits["test"], is_pair, max_len, c.student.encode,
                      _pad_id(c.student))  # fmt: skip
    eval_bs = cfg.eval_batch_size or 2 * cfg.batch_size
    signal = None
    cache_root = default_cache_dir(run_cfg.cache.dir)
    if teacher_needs is not None:
        if use_cache:
            signal = load_or_build(teacher=c.teacher, needs=teacher_needs, split_name="train",
                                   encoded_rows=train.teacher, num_rows=len(train),
                                   data_fp=c.task.fingerprint(), max_length=max_len,
                                   cache_root=cache_root, device=device, batch_size=eval_bs,
                                   explicit_dir=run_cfg.cache.teacher_outputs, progress=progress,
                                   dist=dist)  # fmt: skip
            train.teacher = None  # not needed any more: free the teacher tokenisation
        else:
            signal = LiveTeacher(c.teacher, teacher_needs, device)
    build_seconds = time.perf_counter() - t_build

    names = {s: r.component.name for s, r in resolved.components.items()}
    info = RunInfo(str(run_dir), resolved.as_dict(), 0, names)
    # rank 0 reports; the other ranks' events would repeat its numbers
    reporters = [r.component.build(r.options, c.context) for r in resolved.reporters
                 if dist.is_main]  # fmt: skip

    def on_event(kind: str, **kw: Any) -> None:
        for rep in reporters:
            getattr(rep, kind)(info, **kw)
        hook = {"step": "on_step_end", "evaluation": "on_eval_end"}[kind]
        plugins.notify(hook, run=info, **kw)

    trainer = Trainer(student=c.student, method=c.method, task=c.task, train=train,
                      validation=validation, cfg=cfg, seed=run_cfg.seed, device=device,
                      run_dir=run_dir, teacher_signal=signal, on_event=on_event,
                      progress=progress, save_every=cfg.save_every, dist=dist)  # fmt: skip
    info.total_steps = trainer.total_steps
    if resume:
        trainer.restore(read_checkpoint(run_dir, *trainer.load_targets()))
    for rep in reporters:
        rep.start(info)
    if dist.is_main:
        plugins.notify("on_run_start", run=info)
    try:
        trainer.fit()
    except NonFiniteLossError as exc:
        summary = {"status": "stopped", "error": exc.what, "step": trainer.state.step}
        if dist.is_main:
            write_json(run_dir / "summary.json", summary)
            plugins.notify("on_run_end", run=info, summary=summary)
        raise
    summary = finish_run(c, trainer, validation, test, run_dir, resolved, signal, device,
                         eval_bs, cache_root, use_cache, live, build_seconds, progress, dist)  # fmt: skip
    for rep in reporters:
        rep.finish(info, summary)
    if dist.is_main:
        plugins.notify("on_run_end", run=info, summary=summary)
    return summary


def teacher_test_metrics(c: Components, test: SplitData, cache_root: Path, device: torch.device,
                         eval_bs: int, max_len: int, use_cache: bool, explicit: str | None,
                         progress: bool, dist: Dist | None = None) -> dict[str, float]:  # fmt: skip
    """The teacher's test metrics (its logits cached like the training signal)."""
    examples = c.splits["test"]
    from kdkit.engine.batching import EncodedRows, split_examples

    rows = EncodedRows.build(c.teacher.encode, split_examples(examples, c.task.is_pair), max_len,
                             _pad_id(getattr(c.teacher, "model", None)))  # fmt: skip
    if use_cache:
        cached = load_or_build(teacher=c.teacher, needs=Needs(), split_name="test",
                               encoded_rows=rows, num_rows=len(test), data_fp=c.task.fingerprint(),
                               max_length=max_len, cache_root=cache_root, device=device,
                               batch_size=eval_bs, explicit_dir=explicit, progress=progress,
                               dist=dist)  # fmt: skip
        logits = cached.logits.cpu()
    else:
        from kdkit.engine.teacher_cache import compute_outputs

        logits = compute_outputs(c.teacher, Needs(), rows, len(test), device, eval_bs,
                                 progress=progress, dist=dist)["logits"]  # fmt: skip
    return c.task.evaluate(logits, test.labels)


def finish_run(c: Components, trainer: Trainer, validation: SplitData, test: SplitData,
               run_dir: Path, resolved: ResolvedConfig, signal: Any, device: torch.device,
               eval_bs: int, cache_root: Path, use_cache: bool, live: bool,
               build_seconds: float, progress: bool,
               dist: Dist | None = None) -> dict[str, Any]:  # fmt: skip
    """Evaluate the best student, save it with its predictions, write the summary.

    Over several ranks the evaluation is shared out and gathered (every rank computes the same
    summary); rank 0 alone writes files.
    """
    from kdkit import kernels

    dist = dist or Dist()
    cfg = resolved.run.training
    state = trainer.state
    last_student, _ = trainer.saved_modules()  # FSDP: gathered (every rank takes part)
    if dist.is_main:
        write_model(run_dir / "last" / "model", last_student)
    dist.barrier()  # best/model is complete before any rank reads it
    best = load_student(run_dir / "best" / "model").to(device)
    val_logits = predict_logits(best, validation, eval_bs, device, dist=dist)
    test_logits = predict_logits(best, test, eval_bs, device, dist=dist)
    head = c.task.headline_metric
    val_metrics = c.task.evaluate(val_logits, validation.labels)
    test_metrics = c.task.evaluate(test_logits, test.labels)
    probs = torch.softmax(test_logits, -1)
    labels = list(c.task.labels)
    lines = [json.dumps({"row": i, "label": labels[int(p.argmax())],
                         "probability": round(float(p.max()), 6)}) for i, p in enumerate(probs)]  # fmt: skip
    if dist.is_main:
        atomic_write_text(run_dir / "predictions-test.jsonl", "\n".join(lines) + "\n")
    teacher_summary = None
    if c.teacher is not None:
        teacher_summary = {"name": c.teacher.info.name, "parameters": c.teacher.info.num_parameters,
                           "fingerprint": c.teacher.fingerprint()}  # fmt: skip
        teacher_summary["test"] = teacher_test_metrics(
            c, test, cache_root, device, eval_bs, cfg.max_length, resolved.run.cache.enabled,
            resolved.run.cache.teacher_outputs, progress, dist)  # fmt: skip
    kept = None
    if teacher_summary and teacher_summary["test"].get(head):
        kept = 100.0 * test_metrics[head] / teacher_summary["test"][head]
    impls = kernels.last_impls()
    if dist.is_main:
        write_json(run_dir / "kernels.json", {"requested": resolved.run.kernels.impl, "ran": impls})
    summary: dict[str, Any] = {
        "status": "finished",
        "task": c.task.name if hasattr(c.task, "name") else resolved.components["task"].component.name,
        "method": resolved.components["method"].component.name,
        "seed": resolved.run.seed,
        "headline_metric": head,
        "student": {"name": c.student.info.name, "family": c.student.info.family,
                    "parameters": c.student.info.num_parameters},
        "teacher": teacher_summary,
        "best_step": state.best_step,
        "best_validation": val_metrics,
        "test": test_metrics,
        "kept_percent": kept,
        "steps": state.step,
        "epochs_done": state.epoch,
        "stopped_early": state.stopped_early,
        "train_seconds": state.train_seconds,
        "train_examples_per_s": state.examples_seen / max(state.train_seconds, 1e-9),
        "build_seconds": build_seconds,
        "teacher_signal": None if signal is None else ("live" if live else "cache"),
        "precision": trainer.precision,
        "device": str(device),
        "kernels": impls,
        "run_dir": str(run_dir),
        "history": state.history,
    }  # fmt: skip
    if dist.enabled:
        summary["distributed"] = dist.describe()
    summary["table"] = run_table(summary)
    if dist.is_main:
        write_json(run_dir / "summary.json", summary)
        atomic_write_text(run_dir / "summary.txt", summary["table"] + "\n")
    return summary


def default_threads() -> None:
    """Use every core for intra-op work unless the user said otherwise (OMP_NUM_THREADS)."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, os.cpu_count() or 1))
