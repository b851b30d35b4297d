"""Fine-tuning a teacher on a task (``kdkit teach``), and the cache of teachers kdkit trained.

A teacher is trained by the same loop as students, with the ``ft`` method's cross-entropy
(:func:`kdkit.losses.cross_entropy`), and saved by the model's own ``save`` (a ``transformers``
model: ``save_pretrained``, so ``AutoModelForSequenceClassification.from_pretrained(DIR)`` loads
it). Teacher presets that kdkit trains itself are cached in ``CACHE/teachers/<key>/``, keyed by
what their plugin puts in the spec (data fingerprint, options, training settings), so the second
run reuses the teacher.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from kdkit.api import Batch, KDMethod, LossTerms, ModelOutput, Needs, Requirements, Student, Task
from kdkit.config import TrainingConfig
from kdkit.engine.batching import Encoder, make_split
from kdkit.engine.loop import Trainer, TrainSetup, predict_logits
from kdkit.engine.persist import atomic_write_text, load_student, verify_model_dir
from kdkit.engine.seeding import seed_everything
from kdkit.integrity import has_manifest, write_manifest
from kdkit.losses import cross_entropy
from kdkit.models import KDKIT_META

if TYPE_CHECKING:  # pragma: no cover - import for type checkers only
    from kdkit.registry import Registry


class CrossEntropy(KDMethod):
    """Fine-tuning loss of a teacher: the ``ft`` method's CE (:func:`kdkit.losses.cross_entropy`)."""

    def __init__(self) -> None:
        super().__init__()
        self.requirements = Requirements(student=Needs(), teacher=None)

    def forward(self, student: ModelOutput, teacher: ModelOutput | None, batch: Batch) -> LossTerms:
        """``{"ce": CE(z, y)}`` over labelled rows (0 for a batch without one)."""
        return {"ce": cross_entropy(student.logits, batch.labels)}


@dataclass
class FineTuneJob:
    """What :func:`fine_tune` trains on and how.

    Attributes:
        task: the task (its labels, metrics, and whether examples are pairs).
        splits: its data (``train``, ``validation``, ``test``).
        training: epochs, batch size, learning rate, max length...
        work_dir: where the run's checkpoints go; the best model ends up in ``work_dir/best/model``.
        seed: seed of the data order, dropout and initialisation of what is still random.
        device: where to train.
        progress: show progress bars.
        log: where progress lines go.
        registry: finds the component that reloads the best model (default: installed plugins).
    """

    task: Task
    splits: Any
    training: TrainingConfig
    work_dir: Path
    seed: int
    device: torch.device
    progress: bool = True
    log: Callable[[str], None] = print
    registry: Registry | None = None


def fine_tune(model: Student, job: FineTuneJob) -> dict[str, Any]:
    """Train ``model`` (a :class:`~kdkit.api.Student` with a head for the task) with CE.

    The best model on validation ends up in ``job.work_dir/best/model``; returns its metrics.
    """
    device, cfg = job.device, job.training
    model.to(device)
    is_pair = bool(getattr(job.task, "is_pair", False))
    pad = getattr(getattr(model, "tokenizer", None), "pad_token_id", None) or 0
    enc = Encoder(model.encode, pad)
    train, val, test = (
        make_split(name, job.splits[name], is_pair, cfg.max_length, enc)
        for name in ("train", "validation", "test")
    )
    seed_everything(job.seed)

    def on_event(kind: str, **kw: Any) -> None:
        if kind == "evaluation":
            head = job.task.headline_metric
            job.log(f"  teacher step {kw['step']}: validation {head}={kw['metrics'][head]:.4f}")

    trainer = Trainer(
        TrainSetup(
            student=model,
            method=CrossEntropy(),
            task=job.task,
            train=train,
            validation=val,
            cfg=cfg,
            seed=job.seed,
            device=device,
            run_dir=job.work_dir,
            on_event=on_event,
            progress=job.progress,
        )
    )
    trainer.fit()
    best = load_student(job.work_dir / "best" / "model", job.registry).to(device)
    bs = cfg.eval_batch_size or 2 * cfg.batch_size
    result = {
        "validation": job.task.evaluate(predict_logits(best, val, bs, device), val.labels),
        "test": job.task.evaluate(predict_logits(best, test, bs, device), test.labels),
        "best_step": trainer.state.best_step,
        "steps": trainer.state.step,
        "train_seconds": trainer.state.train_seconds,
        "parameters": best.info.num_parameters,
    }
    best_dir = job.work_dir / "best" / "model"
    atomic_write_text(best_dir / "teach.json", json.dumps(result, indent=2))
    if has_manifest(best_dir):  # teach.json belongs to the model: list it too
        write_manifest(best_dir, "saved model")
    return result


def teacher_key(spec: dict[str, Any]) -> str:
    """Cache key of a kdkit-trained teacher (preset options + data + training settings)."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:20]


def cached_teacher_dir(
    cache_root: Path,
    spec: dict[str, Any],
    make: Callable[[], Student],
    train: Callable[[Student, Path], dict[str, Any]],
    log: Callable[[str], None] = print,
) -> Path:
    """The directory of a trained teacher; trains it (``make`` then ``train``) when missing.

    Training happens in a private folder that is renamed into place at the end, so a killed
    training never leaves a half teacher that a later run would trust.
    """
    key = teacher_key(spec)
    target = cache_root / "teachers" / key
    if (target / KDKIT_META).is_file():
        verify_model_dir(target)  # a damaged entry: IntegrityError naming `kdkit cache clear KEY`
        log(f"kdkit: reusing the cached teacher {target}")
        return target
    if target.exists():  # an entry without kdkit.json (damaged, half deleted): replaced below
        log(
            f"kdkit: the cached teacher {target} is incomplete (no {KDKIT_META}): training it again"
        )
    work = cache_root / "teachers" / f".{key}.work{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log(f"kdkit: training the teacher {spec.get('preset', '')} (cached in {target} afterwards)")
    result = train(make(), work)
    model_dir = work / "best" / "model"
    atomic_write_text(
        model_dir / "spec.json", json.dumps({**spec, "result": result}, indent=2, default=str)
    )
    write_manifest(model_dir, "cached teacher")
    if target.exists() and not (target / KDKIT_META).is_file():  # the incomplete entry
        aside = target.with_name(f".{key}.broken{os.getpid()}")
        os.replace(target, aside)
        shutil.rmtree(aside, ignore_errors=True)
    if not target.exists():  # (a concurrent run that finished first keeps its copy)
        os.replace(model_dir, target)
    shutil.rmtree(work, ignore_errors=True)
    return target
