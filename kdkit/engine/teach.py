"""Fine-tuning a teacher on a task (``kdkit teach``), and the cache of teachers kdkit trained.

A teacher is trained by the same loop as students, with plain cross-entropy, and saved with
``save_pretrained`` (``AutoModelForSequenceClassification.from_pretrained(DIR)`` loads it).
Presets that kdkit trains itself (the from-scratch code teacher, MiniLM fine-tuned on the task)
are cached in ``CACHE/teachers/<key>/``, keyed by the data fingerprint, the preset's options and
the training settings, so the second run reuses the teacher.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from kdkit.api import Batch, KDMethod, LossTerms, ModelOutput, Needs, Requirements
from kdkit.config import TrainingConfig
from kdkit.engine.batching import Encoder, make_split
from kdkit.engine.loop import Trainer, TrainSetup, predict_logits
from kdkit.engine.persist import atomic_write_text, load_student
from kdkit.engine.seeding import seed_everything


class CrossEntropy(KDMethod):
    """Fine-tuning loss of a teacher: ``CE(z, y)``; no teacher of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.requirements = Requirements(student=Needs(), teacher=None)

    def forward(self, student: ModelOutput, teacher: ModelOutput | None, batch: Batch) -> LossTerms:
        """``{"ce": CE(z, y)}`` over labelled rows."""
        return {"ce": torch.nn.functional.cross_entropy(student.logits, batch.labels,
                                                        ignore_index=-100)}  # fmt: skip


def fine_tune(model: Any, task: Any, splits: Any, cfg: TrainingConfig, work_dir: Path, *,
              seed: int, device: torch.device, progress: bool = True,
              log: Callable[[str], None] = print) -> dict[str, Any]:  # fmt: skip
    """Train ``model`` (an :class:`~kdkit.engine.hf_model.HFClassifier`) on the task with CE.

    The best model on validation ends up in ``work_dir/best/model``; returns its metrics.
    """
    model.to(device)
    is_pair = bool(getattr(task, "is_pair", False))
    enc = Encoder(model.encode, model.tokenizer.pad_token_id or 0)
    train = make_split("train", splits["train"], is_pair, cfg.max_length, enc)
    val = make_split("validation", splits["validation"], is_pair, cfg.max_length, enc)
    test = make_split("test", splits["test"], is_pair, cfg.max_length, enc)
    seed_everything(seed)

    def on_event(kind: str, **kw: Any) -> None:
        if kind == "evaluation":
            head = task.headline_metric
            log(f"  teacher step {kw['step']}: validation {head}={kw['metrics'][head]:.4f}")

    trainer = Trainer(TrainSetup(student=model, method=CrossEntropy(), task=task, train=train,
                                 validation=val, cfg=cfg, seed=seed, device=device,
                                 run_dir=work_dir, on_event=on_event, progress=progress))  # fmt: skip
    trainer.fit()
    best = load_student(work_dir / "best" / "model").to(device)
    bs = cfg.eval_batch_size or 2 * cfg.batch_size
    result = {
        "validation": task.evaluate(predict_logits(best, val, bs, device), val.labels),
        "test": task.evaluate(predict_logits(best, test, bs, device), test.labels),
        "best_step": trainer.state.best_step,
        "steps": trainer.state.step,
        "train_seconds": trainer.state.train_seconds,
        "parameters": best.info.num_parameters,
    }
    atomic_write_text(work_dir / "best" / "model" / "teach.json", json.dumps(result, indent=2))
    return result


def teacher_key(spec: dict[str, Any]) -> str:
    """Cache key of a kdkit-trained teacher (preset options + data + training settings)."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:20]


def cached_teacher_dir(cache_root: Path, spec: dict[str, Any], make: Callable[[], Any],
                       train: Callable[[Any, Path], dict[str, Any]],
                       log: Callable[[str], None] = print) -> Path:  # fmt: skip
    """The directory of a trained teacher; trains it (``make`` then ``train``) when missing.

    Training happens in a private folder that is renamed into place at the end, so a killed
    training never leaves a half teacher that a later run would trust.
    """
    key = teacher_key(spec)
    target = cache_root / "teachers" / key
    if (target / "kdkit.json").is_file():
        log(f"kdkit: reusing the cached teacher {target}")
        return target
    work = cache_root / "teachers" / f".{key}.work{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log(f"kdkit: training the teacher {spec.get('preset', '')} (cached in {target} afterwards)")
    result = train(make(), work)
    model_dir = work / "best" / "model"
    atomic_write_text(model_dir / "spec.json", json.dumps({**spec, "result": result}, indent=2,
                                                          default=str))  # fmt: skip
    if not target.exists():
        os.replace(model_dir, target)
    shutil.rmtree(work, ignore_errors=True)
    return target
