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

from kdkit.engine.batching import batches_of, epoch_order, steps_per_epoch
from kdkit.engine.loop import Trainer, TrainSetup
from kdkit.engine.runner import RunEnv, build_components, prepare, resolve_device, signal_kind
from kdkit.study.resolve import PlannedRun


def time_steps(run: PlannedRun, signal: str, steps: int) -> dict[str, Any] | None:
    """``{"seconds_per_step", "steps_per_epoch", "seconds_per_epoch", ...}`` or ``None`` when the
    combination does not exist (``live`` for FT; ``cache`` for a method whose needs the cache
    does not hold)."""
    resolved = run.resolved
    rc, cfg = resolved.run, resolved.run.training
    scratch = Path(tempfile.mkdtemp(prefix="kdkit-timing-"))
    try:
        env = RunEnv(resolved, scratch, resolve_device(cfg.device), progress=False)
        c = build_components(resolved, env.device, scratch)
        needs = c.method.requirements.teacher
        if needs is None and signal == "live":
            return None
        if needs is not None and signal == "cache" and signal_kind(needs, rc.cache) != "cache":
            return None
        prep = prepare(c, env, None if needs is None else signal, test=False)
        train = prep.train
        trainer = Trainer(
            TrainSetup(
                student=c.student,
                method=c.method,
                task=c.task,
                train=train,
                validation=train,
                cfg=cfg,
                seed=rc.seed,
                device=env.device,
                run_dir=scratch,
                teacher_signal=prep.signal,
                progress=False,
            )
        )
        batches = list(batches_of(epoch_order(len(train), rc.seed, 0), cfg.batch_size))
        todo = (batches * (1 + (steps + 1) // max(len(batches), 1)))[: steps + 1]
        trainer.train_step(todo[0])  # warm-up
        t0 = time.perf_counter()
        for rows in todo[1:]:
            trainer.train_step(rows)
        per_step = (time.perf_counter() - t0) / max(len(todo) - 1, 1)
        n_steps = steps_per_epoch(len(train), cfg.batch_size)
        return {
            "task": run.point.labels()["task"],
            "student": run.point.labels()["student"],
            "method": run.point.labels()["method"],
            "signal": "none" if needs is None else signal,
            "steps_timed": len(todo) - 1,
            "seconds_per_step": per_step,
            "steps_per_epoch": n_steps,
            "seconds_per_epoch": per_step * n_steps,
            "batch_size": cfg.batch_size,
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
