"""One run, from a resolved configuration to a run directory with a summary.

config -> components (task, data, student, teacher, method) -> tokenised splits -> teacher signal
(cache or live) -> :class:`kdkit.engine.loop.Trainer` -> best student on validation and test ->
saved student, predictions, summary. Reporters and lifecycle hooks see every event.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

import kdkit.kernels as kernels  # (not "from kdkit import": mypy cannot see kernels/ as kdkit/)
from kdkit.api import (
    BuildContext,
    KDMethod,
    ModelInfo,
    Needs,
    Reporter,
    RunInfo,
    Student,
    Task,
    Teacher,
)
from kdkit.baselines.runs import flags, from_summary, run_baselines
from kdkit.config import CacheConfig, ResolvedConfig, TrainingConfig
from kdkit.discovery import Plugins
from kdkit.engine.batching import EncodedRows, Encoder, SplitData, make_split, split_examples
from kdkit.engine.checkpoint import checkpoint_dir, preflight, read_checkpoint, write_model
from kdkit.engine.distributed import Dist, setup
from kdkit.engine.loop import TeacherSignal, Trainer, TrainSetup, predict_logits
from kdkit.engine.persist import atomic_write_text, load_student
from kdkit.engine.runlock import RunLock, lock_run_dir
from kdkit.engine.seeding import seed_everything
from kdkit.engine.summary import run_table, versions, write_json
from kdkit.engine.teacher_cache import (
    CacheSlot,
    LiveTeacher,
    TeacherPass,
    cacheable,
    compute_outputs,
    load_or_build,
)
from kdkit.engine.teacher_import import imported_teacher_summary, load_import
from kdkit.engine.tokenization import default_cache_dir
from kdkit.engine.topk_cache import LogitsFormat
from kdkit.errors import KdkitError, NonFiniteLossError

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    import datasets

    from kdkit.registry import Registry


def resolve_device(name: str) -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise KdkitError(
            f"unknown device {name!r}", where="training.device", fix="use auto, cpu, cuda or cuda:N"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise KdkitError(
            "training.device asks for CUDA but no GPU is visible",
            where="training.device",
            fix="set training.device: cpu (or auto)",
        )
    return device


@dataclass
class Components:
    """The built components of a run."""

    task: Task
    splits: datasets.DatasetDict
    student: Student
    teacher: Teacher | None
    method: KDMethod
    context: BuildContext


def build_components(
    resolved: ResolvedConfig,
    device: torch.device,
    run_dir: Path,
    progress: bool = True,
    dataset: Any = None,
) -> Components:
    """Build task (and load its data), student, teacher and method, in that order.

    ``dataset`` (an in-memory ``datasets.Dataset``/``DatasetDict``, from the Python API) reaches
    the task through ``BuildContext.extra["dataset"]``.
    """
    run = resolved.run
    cache_dir = str(default_cache_dir(run.cache.dir))
    ctx = BuildContext(
        device=device,
        seed=run.seed,
        cache_dir=cache_dir,
        run_dir=str(run_dir),
        kernel_impl=run.kernels.impl,
        max_length=run.training.max_length,
        extra={"progress": progress, **({"dataset": dataset} if dataset is not None else {})},
    )
    # the engine alone sets the kernel choice, from the context every component is built with
    kernels.set_default_impl(ctx.kernel_impl)
    kernels.reset_last_impls()
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
    if run.cache.teacher_import and "teacher" in comps:
        raise KdkitError(
            "the run has a teacher section and cache.teacher_import: the teacher's outputs come "
            "from the import",
            where="teacher",
            fix="remove the teacher section (or cache.teacher_import to run the teacher)",
        )
    if run.cache.teacher_import:  # methods see a teacher; its outputs are logits only
        ctx.teacher = ModelInfo(f"imported:{run.cache.teacher_import}", "imported", 0, 0, 0)
    if "teacher" in comps:
        teacher = comps["teacher"].component.build(comps["teacher"].options, ctx)
        ctx.teacher = teacher.info
        if hasattr(teacher, "to"):
            teacher.to(device)
    seed_everything(run.seed + 1)  # projections: independent of how the teacher was obtained
    method = method_comp.component.build(method_comp.options, ctx)
    method.to(device)
    if method.requires_teacher and teacher is None and not run.cache.teacher_import:
        raise KdkitError(
            f"method '{method_comp.component.name}' needs a teacher",
            where="teacher",
            fix="add a teacher section (e.g. `teacher: code-teacher`) or use method: ft",
        )
    return Components(task, splits, student, teacher, method, ctx)


#: What a run directory holds once training has produced something worth keeping.
PROGRESS_FILES = ("checkpoints", "best", "last", "metrics.jsonl", "summary.json")
#: Of those, what an attempt leaves once it reached its first checkpoint (or finished).
RESUMABLE = ("checkpoints", "best", "last")
#: Where a fresh start moves the metrics and summary of an attempt that never checkpointed.
STOPPED_ATTEMPT = "stopped-attempt"


def _summary_status(run_dir: Path) -> str | None:
    try:
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return summary.get("status") if isinstance(summary, dict) else None


def stopped_before_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds only the metrics (and a ``stopped`` summary) of an attempt that
    ended — a NaN stop, a kill — before its first checkpoint: nothing there can be resumed, so a
    fresh start may use the directory (the old files are moved to ``stopped-attempt/``)."""
    if any((run_dir / name).exists() for name in RESUMABLE):
        return False
    if (run_dir / "summary.json").exists():
        return _summary_status(run_dir) == "stopped"
    return (run_dir / "metrics.jsonl").exists()


def holds_progress(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds training results (a checkpoint, a model, metrics, a summary).

    A directory with only the ``config.yaml``/``versions.json`` of an attempt that stopped before
    training (a missing teacher, a typo in a path), or only the metrics of an attempt that
    stopped before its first checkpoint (:func:`stopped_before_checkpoint`), holds nothing of
    the user's: a new ``kdkit run`` may start there again instead of forcing the user to delete
    it.
    """
    if stopped_before_checkpoint(run_dir):
        return False
    return any((run_dir / name).exists() for name in PROGRESS_FILES)


def _set_aside_stopped_attempt(run_dir: Path) -> None:
    aside = run_dir / STOPPED_ATTEMPT
    found = [run_dir / n for n in PROGRESS_FILES if (run_dir / n).exists()]
    if not found:
        return
    shutil.rmtree(aside, ignore_errors=True)
    aside.mkdir()
    for path in found:
        os.replace(path, aside / path.name)


def prepare_run_dir(resolved: ResolvedConfig, resume: str | None) -> Path:
    """The run directory; refuses to overwrite a run that exists (nothing is ever deleted).

    The caller holds the directory's lock (:func:`kdkit.engine.runlock.lock_run_dir`).
    """
    if resume:
        run_dir = checkpoint_dir(resume)[0]
        if not (run_dir / "config.yaml").is_file():
            raise KdkitError(
                "not a kdkit run directory (no config.yaml)",
                where=str(run_dir),
                fix="pass the output_dir of a run started with `kdkit run`",
            )
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
    if stopped_before_checkpoint(run_dir):
        _set_aside_stopped_attempt(run_dir)
    return run_dir


def locked_run_dir(resolved: ResolvedConfig, resume: str | None) -> tuple[Path, RunLock]:
    """Lock the run directory (refusing when another run holds it), then
    :func:`prepare_run_dir` it."""
    target = checkpoint_dir(resume)[0] if resume else resolved.output_dir()
    if resume and not target.is_dir():
        prepare_run_dir(resolved, resume)  # the clear "not a kdkit run directory" error
    lock = lock_run_dir(target)
    try:
        run_dir = prepare_run_dir(resolved, resume)
        if resume:  # a damaged checkpoint is reported before anything is built
            preflight(checkpoint_dir(resume)[1])
        return run_dir, lock
    except BaseException:
        lock.release()
        raise


def run(
    resolved: ResolvedConfig, plugins: Plugins, resume: str | None = None, *, progress: bool = True
) -> int:
    """Run one configuration; returns the exit status (0). See :func:`run_once` for the summary."""
    run_once(resolved, plugins, resume=resume, progress=progress)
    return 0


def run_once(
    resolved: ResolvedConfig,
    plugins: Plugins,
    resume: str | None = None,
    *,
    progress: bool = True,
    dataset: Any = None,
) -> dict[str, Any]:
    """Run one configuration and return its summary (also written to ``summary.json``).

    ``dataset``: an in-memory ``datasets.Dataset``/``DatasetDict`` for the task to read instead of
    its configured source (the Python API's ``kdkit.distill(dataset=...)``).

    Started by ``torchrun`` (``WORLD_SIZE > 1``), it runs data-parallel across the processes
    (``training.distributed``, docs/distributed.md); every rank returns the same summary and only
    rank 0 writes files and reports.
    """
    dist, device_name = setup(resolved.run.training.distributed, resolved.run.training.device)
    locks: list[RunLock] = []

    def prepare() -> str:
        run_dir, lock = locked_run_dir(resolved, resume)
        locks.append(lock)
        return str(run_dir)

    try:
        run_dir = Path(dist.on_main(prepare))  # rank 0 holds the lock for the whole run
        env = RunEnv(
            resolved, run_dir, resolve_device(device_name), dist, progress and dist.is_main, dataset
        )
        return _run_once(env, plugins, resume)
    finally:
        for lock in locks:
            lock.release()
        dist.close()


@dataclass
class RunEnv:
    """Where and how one run computes: passed to every stage of the run as one object.

    Attributes:
        resolved: the validated run configuration.
        run_dir: the run's output directory.
        device: where it computes.
        dist: the process group (one process by default).
        progress: show progress bars (rank 0 only).
        dataset: an in-memory dataset for the task (Python API), or ``None``.
    """

    resolved: ResolvedConfig
    run_dir: Path
    device: torch.device
    dist: Dist = field(default_factory=Dist)
    progress: bool = True
    dataset: Any = None

    @property
    def training(self) -> TrainingConfig:
        """The run's ``training`` section."""
        return self.resolved.run.training

    @property
    def eval_batch_size(self) -> int:
        """``training.eval_batch_size``, or twice the training batch size."""
        return self.training.eval_batch_size or 2 * self.training.batch_size

    @property
    def cache_root(self) -> Path:
        """The cache directory (``cache.dir``, ``KDKIT_CACHE`` or the default)."""
        return default_cache_dir(self.resolved.run.cache.dir)


@dataclass
class Prepared:
    """A run's tokenised splits and its teacher signal, ready for the :class:`Trainer`.

    ``signal_kind`` is ``"cache"``, ``"live"`` or ``None`` (no teacher is used).
    """

    train: SplitData
    validation: SplitData
    test: SplitData | None
    signal: TeacherSignal | None
    signal_kind: str | None
    build_seconds: float = 0.0


def signal_kind(needs: Needs | None, cache: CacheConfig) -> str | None:
    """How a method's teacher needs are served: ``"import"`` from imported teacher outputs
    (``cache.teacher_import``), ``"cache"`` when the cache is on and holds what it needs,
    ``"live"`` (the teacher runs on each batch) otherwise, ``None`` without a teacher."""
    if needs is None:
        return None
    if cache.teacher_import:
        return "import"
    return "cache" if cache.enabled and cacheable(needs, cache.token_states) else "live"


def tokenise(c: Components, env: RunEnv, name: str, with_teacher: bool = False) -> SplitData:
    """Split ``name`` tokenised for the student (and the teacher when ``with_teacher``)."""
    teacher = Encoder.of_teacher(c.teacher) if with_teacher and c.teacher is not None else None
    return make_split(
        name,
        c.splits[name],
        bool(getattr(c.task, "is_pair", False)),
        env.training.max_length,
        Encoder.of_student(c.student),
        teacher,
    )


def teacher_signal(
    c: Components, env: RunEnv, train: SplitData, kind: str | None
) -> TeacherSignal | None:
    """The training teacher signal of ``kind`` (:func:`signal_kind`); a cached one is read from
    (or built into) the teacher cache, after which the train split's teacher tokenisation is
    dropped (nothing needs it any more)."""
    needs = c.method.requirements.teacher
    cache = env.resolved.run.cache
    if kind == "import" and needs is not None and cache.teacher_import:
        return load_import(
            cache.teacher_import, "train", env.cache_root, c.task, len(train), needs, env.device
        )
    if kind is None or needs is None or c.teacher is None:
        return None
    if kind == "live":
        return LiveTeacher(c.teacher, needs, env.device)
    if train.teacher is None:
        raise ValueError("the train split was tokenised without the teacher")
    job = TeacherPass(
        c.teacher, needs, train.teacher, env.device, env.eval_batch_size, env.progress, env.dist
    )
    slot = CacheSlot(
        "train",
        c.task.fingerprint(),
        env.training.max_length,
        env.cache_root,
        cache.teacher_outputs,
        cache.token_states,
        LogitsFormat.of(cache),  # full logits or top-k (docs/caching.md)
    )
    signal = load_or_build(job, slot)
    train.teacher = None  # not needed any more: free the teacher tokenisation
    return signal


def prepare(c: Components, env: RunEnv, kind: str | None, *, test: bool = True) -> Prepared:
    """Tokenise the splits and set up the teacher signal of ``kind`` (see :func:`signal_kind`)."""
    train = tokenise(c, env, "train", with_teacher=kind is not None)
    validation = tokenise(c, env, "validation")
    test_split = tokenise(c, env, "test") if test else None
    return Prepared(train, validation, test_split, teacher_signal(c, env, train, kind), kind)


def _run_once(env: RunEnv, plugins: Plugins, resume: str | None) -> dict[str, Any]:
    resolved, dist, run_dir, cfg = env.resolved, env.dist, env.run_dir, env.training
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    if not resume and dist.is_main:
        atomic_write_text(run_dir / "config.yaml", resolved.to_yaml())
        write_json(run_dir / "versions.json", versions(plugins))
    t_build = time.perf_counter()
    with dist.main_first():  # rank 0 fills the caches (data, tokenizers, teachers) first
        c = build_components(resolved, env.device, run_dir, env.progress, env.dataset)
    kind = signal_kind(c.method.requirements.teacher, resolved.run.cache)
    prep = prepare(c, env, kind)
    prep.build_seconds = time.perf_counter() - t_build

    names = {s: r.component.name for s, r in resolved.components.items()}
    info = RunInfo(str(run_dir), resolved.as_dict(), 0, names)
    # rank 0 reports; the other ranks' events would repeat its numbers
    reporters = [
        r.component.build(r.options, c.context) for r in resolved.reporters if dist.is_main
    ]
    events = RunEvents(info, reporters, plugins, dist.is_main)
    trainer = Trainer(
        TrainSetup(
            student=c.student,
            method=c.method,
            task=c.task,
            train=prep.train,
            validation=prep.validation,
            cfg=cfg,
            seed=resolved.run.seed,
            device=env.device,
            run_dir=run_dir,
            teacher_signal=prep.signal,
            on_event=events.on_event,
            progress=env.progress,
            save_every=cfg.save_every,
            dist=dist,
        )
    )
    info.total_steps = trainer.total_steps
    if resume:
        info.resumed_step = resume_trainer(trainer, run_dir, checkpoint_dir(resume)[1], dist)
    events.start()
    try:
        trainer.fit()
    except NonFiniteLossError as exc:
        summary = {"status": "stopped", "error": exc.what, "step": trainer.state.step}
        if dist.is_main:
            write_json(run_dir / "summary.json", summary)
        events.end(summary)
        raise
    summary = finish_run(c, trainer, env, prep, plugins.registry)
    events.end(summary)
    # no rank leaves the process group while another still talks to it: gloo aborts (SIGABRT,
    # "terminate called without an active exception") a rank whose peer closed its pair early
    dist.barrier()
    return summary


def resume_trainer(trainer: Trainer, run_dir: Path, source: Path, dist: Dist) -> int:
    """Restore ``trainer`` from the checkpoint in ``source``; returns the step resumed at.

    A state that does not fit this run (another model, another number of parameter groups)
    is a :class:`KdkitError` naming the checkpoint, not a traceback; hyperparameters the
    configuration changed are applied and listed on stderr.
    """
    state = read_checkpoint(run_dir, *trainer.load_targets(), source)
    try:
        changed = trainer.restore(state)
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
        raise KdkitError(
            f"the checkpoint does not fit this run: {type(exc).__name__}: {str(exc)[:300]}",
            where=str(source / "state.json"),
            fix="resume with the configuration the run was started with (its config.yaml); a "
            "changed model, method or parameter grouping needs a new run in a new output_dir",
        ) from None
    if changed and dist.is_main:
        print(
            f"kdkit: resuming at step {trainer.state.step} with the changed settings: "
            + "; ".join(changed),
            file=sys.stderr,
        )
    return trainer.state.step


class RunEvents:
    """Fans a run's events out to its reporters and the plugins' lifecycle hooks — the one
    place the engine calls them (rank 0 only: the other ranks' events would repeat its numbers).
    """

    #: Trainer event kind -> the lifecycle hook that observes it.
    HOOKS = {"step": "on_step_end", "evaluation": "on_eval_end"}

    def __init__(
        self, info: RunInfo, reporters: list[Reporter], plugins: Plugins, active: bool
    ) -> None:
        self.info, self.reporters, self.plugins, self.active = info, reporters, plugins, active

    def start(self) -> None:
        """Before training: ``Reporter.start`` and ``on_run_start``."""
        for rep in self.reporters:
            rep.start(self.info)
        if self.active:
            self.plugins.notify("on_run_start", run=self.info)

    def on_event(self, kind: str, **kw: Any) -> None:
        """A trainer event (``step`` or ``evaluation``): the reporters' method of that name and
        its lifecycle hook."""
        for rep in self.reporters:
            getattr(rep, kind)(self.info, **kw)
        if self.active:
            self.plugins.notify(self.HOOKS[kind], run=self.info, **kw)

    def end(self, summary: dict[str, Any]) -> None:
        """After the run (finished or stopped): ``Reporter.finish`` (finished runs only) and
        ``on_run_end``."""
        if summary.get("status") == "finished":
            for rep in self.reporters:
                rep.finish(self.info, summary)
        if self.active:
            self.plugins.notify("on_run_end", run=self.info, summary=summary)


def teacher_test_metrics(c: Components, env: RunEnv, test: SplitData) -> dict[str, float]:
    """The teacher's test metrics (its logits cached like the training signal)."""
    if c.teacher is None:
        raise ValueError("the run has no teacher")
    rows = EncodedRows.build(
        c.teacher.encode,
        split_examples(c.splits["test"], c.task.is_pair),
        env.training.max_length,
        Encoder.of_teacher(c.teacher).pad_id,
    )
    job = TeacherPass(
        c.teacher, Needs(), rows, env.device, env.eval_batch_size, env.progress, env.dist
    )
    cache = env.resolved.run.cache
    if cache.enabled:
        slot = CacheSlot(
            "test",
            c.task.fingerprint(),
            env.training.max_length,
            env.cache_root,
            cache.teacher_outputs,
        )
        logits = load_or_build(job, slot).logits.cpu()
    else:
        logits = compute_outputs(job)["logits"]
    return c.task.evaluate(logits, test.labels)


def finish_run(
    c: Components, trainer: Trainer, env: RunEnv, prep: Prepared, registry: Registry
) -> dict[str, Any]:
    """Evaluate the best student, save it with its predictions, write the summary.

    ``registry`` (the run's) reloads the best student, so in-process plugins are found too.

    Over several ranks the evaluation is shared out and gathered (every rank computes the same
    summary); rank 0 alone writes files.
    """
    resolved, dist, run_dir, device = env.resolved, env.dist, env.run_dir, env.device
    validation, test = prep.validation, prep.test
    if test is None:
        raise ValueError("finish_run needs the test split")
    eval_bs = env.eval_batch_size
    state = trainer.state
    last_student, _ = trainer.saved_modules()  # FSDP: gathered (every rank takes part)
    if dist.is_main:
        write_model(run_dir / "last" / "model", last_student)
    dist.barrier()  # best/model is complete before any rank reads it
    best = load_student(run_dir / "best" / "model", registry).to(device)
    val_logits = predict_logits(best, validation, eval_bs, device, dist=dist)
    test_logits = predict_logits(best, test, eval_bs, device, dist=dist)
    head = c.task.headline_metric
    val_metrics = c.task.evaluate(val_logits, validation.labels)
    test_metrics = c.task.evaluate(test_logits, test.labels)
    probs = torch.softmax(test_logits, -1)
    labels = list(c.task.labels)
    lines = [
        json.dumps(
            {"row": i, "label": labels[int(p.argmax())], "probability": round(float(p.max()), 6)}
        )
        for i, p in enumerate(probs)
    ]
    if dist.is_main:
        atomic_write_text(run_dir / "predictions-test.jsonl", "\n".join(lines) + "\n")
    teacher_summary: dict[str, Any] | None = None
    if c.teacher is None and resolved.run.cache.teacher_import:
        teacher_summary = imported_teacher_summary(
            resolved.run.cache.teacher_import, env.cache_root, c.task, test.labels
        )
    elif c.teacher is not None:
        teacher_summary = {
            "name": c.teacher.info.name,
            "parameters": c.teacher.info.num_parameters,
            "fingerprint": c.teacher.fingerprint(),
            "test": teacher_test_metrics(c, env, test),
        }
    # the task's baselines, beside the scores (cached with the data; rank 0 computes them)
    baselines = dist.on_main(
        lambda: run_baselines(c.task, str(env.cache_root), enabled=env.training.baselines)
    )
    kept = None
    if teacher_summary and teacher_summary["test"].get(head):
        kept = 100.0 * test_metrics[head] / teacher_summary["test"][head]
    impls = kernels.last_impls()
    if dist.is_main:
        write_json(run_dir / "kernels.json", {"requested": resolved.run.kernels.impl, "ran": impls})
    summary: dict[str, Any] = {
        "status": "finished",
        "task": c.task.name
        if hasattr(c.task, "name")
        else resolved.components["task"].component.name,
        "method": resolved.components["method"].component.name,
        "seed": resolved.run.seed,
        "headline_metric": head,
        "student": {
            "name": c.student.info.name,
            "family": c.student.info.family,
            "parameters": c.student.info.num_parameters,
        },
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
        "build_seconds": prep.build_seconds,
        "teacher_signal": prep.signal_kind if prep.signal is not None else None,
        "precision": trainer.precision,
        "device": str(device),
        "kernels": impls,
        "run_dir": str(run_dir),
        "history": state.history,
        "baselines": baselines.summary_entry(),
    }
    student_flags = flags(
        from_summary(summary["baselines"]),
        teacher_summary["test"].get(head) if teacher_summary else None,
        {"student": test_metrics[head]},
    )
    summary["flags"] = student_flags + ([baselines.note] if baselines.note else [])
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
