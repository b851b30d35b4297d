"""Timing a few training steps of one run's configuration, as the engine would run them.

The components, tokenised batches, teacher signal (cache or live) and :class:`Trainer` are set up
the way :func:`kdkit.engine.runner.run_once` sets them up; then one warm-up step and ``steps``
timed steps run. Nothing is written to the run's directory (a scratch directory is used).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from kdkit.study.resolve import PlannedRun


def _pad_id(model: Any) -> int:
    pad = getattr(getattr(model, "tokenizer", None), "pad_token_id", None)
    return int(pad) if pad is not None else 0


def time_steps(run: PlannedRun, signal: str, steps: int) -> dict[str, Any] | None:
    """``{"seconds_per_step", "steps_per_epoch", "seconds_per_epoch", ...}`` or ``None`` when the
    combination does not exist (``live`` for FT; ``cache`` for a method whose needs the cache
    does not hold)."""
    from kdkit.engine.batching import batches_of, epoch_order, make_split, steps_per_epoch
    from kdkit.engine.loop import Trainer
    from kdkit.engine.runner import build_components, resolve_device
    from kdkit.engine.teacher_cache import LiveTeacher, cacheable, load_or_build
    from kdkit.engine.tokenization import default_cache_dir

    resolved = run.resolved
    rc, cfg = resolved.run, resolved.run.training
    scratch = Path(tempfile.mkdtemp(prefix="kdkit-timing-"))
    try:
        device = resolve_device(cfg.device)
        c = build_components(resolved, device, scratch)
        needs = c.method.requirements.teacher
        if needs is None and signal == "live":
            return None
        if needs is not None and signal == "cache" and not (rc.cache.enabled and cacheable(needs)):
            return None
        is_pair = bool(getattr(c.task, "is_pair", False))
        t_enc = c.teacher.encode if needs is not None else None
        train = make_split("train", c.splits["train"], is_pair, cfg.max_length, c.student.encode,
                           _pad_id(c.student), t_enc, _pad_id(getattr(c.teacher, "model", None)))  # fmt: skip
        teacher_signal = None
        if needs is not None and signal == "cache":
            teacher_signal = load_or_build(teacher=c.teacher, needs=needs, split_name="train",
                                           encoded_rows=train.teacher, num_rows=len(train),
                                           data_fp=c.task.fingerprint(), max_length=cfg.max_length,
                                           cache_root=default_cache_dir(rc.cache.dir), device=device,
                                           batch_size=cfg.eval_batch_size or 2 * cfg.batch_size,
                                           explicit_dir=rc.cache.teacher_outputs, progress=False)  # fmt: skip
            train.teacher = None
        elif needs is not None:
            teacher_signal = LiveTeacher(c.teacher, needs, device)
        trainer = Trainer(student=c.student, method=c.method, task=c.task, train=train,
                          validation=train, cfg=cfg, seed=rc.seed, device=device, run_dir=scratch,
                          teacher_signal=teacher_signal, on_event=lambda *_a, **_k: None,
                          progress=False)  # fmt: skip
        batches = list(batches_of(epoch_order(len(train), rc.seed, 0), cfg.batch_size))
        todo = (batches * (1 + (steps + 1) // max(len(batches), 1)))[: steps + 1]
        trainer.train_step(train.batch(todo[0]))  # warm-up
        t0 = time.perf_counter()
        for rows in todo[1:]:
            trainer.train_step(train.batch(rows))
        per_step = (time.perf_counter() - t0) / max(len(todo) - 1, 1)
        n_steps = steps_per_epoch(len(train), cfg.batch_size)
        return {"task": run.point.labels()["task"], "student": run.point.labels()["student"],
                "method": run.point.labels()["method"],
                "signal": "none" if needs is None else signal, "steps_timed": len(todo) - 1,
                "seconds_per_step": per_step, "steps_per_epoch": n_steps,
                "seconds_per_epoch": per_step * n_steps, "batch_size": cfg.batch_size}  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
