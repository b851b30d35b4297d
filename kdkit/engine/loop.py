"""The training loop: one pipeline for every method, readable top to bottom.

Per step: batch -> teacher signal (live under ``no_grad``, or from the cache) -> student forward
-> method loss terms -> finite check -> backward -> clip (really) -> AdamW step -> schedule.
Per evaluation: the task's metrics on validation; the best student (by the headline metric) is
saved. Checkpoints carry everything for an exact resume, random state included.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from kdkit.api import Batch, KDMethod, ModelOutput, Needs, Progress, Requirements, Student, Task
from kdkit.config import TrainingConfig
from kdkit.engine.batching import SplitData, batches_of, epoch_order, steps_per_epoch
from kdkit.engine.checkpoint import write_checkpoint, write_model
from kdkit.engine.distributed import (
    Dist,
    TrainModule,
    export_full,
    import_full,
    load_optimizer_state,
    optimizer_state,
    rank_batches,
    real_rows,
    wrap,
)
from kdkit.engine.optim import build_optimizer, build_schedule, clip_gradients, trainable_parameters
from kdkit.engine.seeding import rng_state, seed_everything, set_rng_state
from kdkit.errors import NonFiniteLossError
from kdkit.profiling.regions import region
from kdkit.progress import progress_bar

#: ``batch -> teacher outputs`` (a live teacher or the cache); see kdkit.engine.teacher_cache.
TeacherSignal = Callable[[Batch], ModelOutput]
#: ``(kind, **fields)``: ``step`` (step, record) or ``evaluation`` (step, split, metrics).
EventSink = Callable[..., None]
#: A zero-argument factory of the autocast context (``contextlib.nullcontext`` for fp32).
AutocastFactory = Callable[[], contextlib.AbstractContextManager[Any]]


@dataclass
class TrainState:
    """Counters a checkpoint stores; a resumed run continues from them."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_metric: float | None = None
    best_step: int = 0
    evals_without_gain: int = 0
    stopped_early: bool = False
    train_seconds: float = 0.0
    examples_seen: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def precision_context(device: torch.device, precision: str) -> tuple[AutocastFactory, str]:
    """(autocast context factory, the precision used). ``auto``: bf16 on capable GPUs, else fp32."""
    if precision == "auto":
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        precision = "bf16" if cuda_bf16 else "fp32"
    if precision == "fp32":
        return contextlib.nullcontext, "fp32"
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return (lambda: torch.autocast(device.type, dtype=dtype)), precision


@torch.no_grad()
def predict_logits(
    model: Student,
    split: SplitData,
    batch_size: int,
    device: torch.device,
    autocast: AutocastFactory = contextlib.nullcontext,
    dist: Dist | None = None,
) -> torch.Tensor:
    """``[N, C]`` logits of a student over a split, in row order (rows sorted by length inside).

    Each rank predicts its whole batches of one batch plan (:func:`rank_batches`: on one process
    all of them) and every rank receives all ``N`` rows: over several ranks the logits are
    bit-identical to one process's, and no row is counted twice or dropped.
    """
    dist = dist or Dist()
    model.eval()
    n = len(split)
    order = sorted(range(n), key=lambda r: int(split.student.input_ids[r].numel()))
    plan = list(batches_of(order, batch_size))
    if not plan:
        raise ValueError(f"split {split.name!r} has no rows to predict")
    mine = rank_batches(plan, dist.rank, dist.world_size)
    # FSDP gathers parameters inside every forward: all ranks must make the same number of calls
    calls = -(-len(plan) // dist.world_size) if dist.mode == "fsdp" else max(len(mine), 1)
    parts = []
    for k in range(calls):
        rows = mine[k] if k < len(mine) else plan[0]  # extra calls: outputs are dropped
        with autocast():
            out = model(split.student.collate(rows).to(device), Needs()).logits.float().cpu()
        if k < len(mine):
            parts.append(out)
    width = out.shape[-1]  # [B, C]: C known even on a rank with no batch of its own
    mine_rows = [r for rows in mine for r in rows]
    logits = torch.cat(parts) if parts else torch.empty(0, width)
    return dist.gather_rows(logits, mine_rows, n)


def _ignore_event(kind: str, **kwargs: Any) -> None:
    """The default event sink: nothing listens."""


@dataclass
class TrainSetup:
    """Everything a :class:`Trainer` works with, passed as one object.

    Attributes:
        student: the model trained.
        method: the KD method (its own modules are trained with the student).
        task: evaluates validation logits (its ``headline_metric`` selects the best student).
        train: the tokenised training split; ``validation`` the split that selects.
        cfg: the run's ``training`` section.
        seed: the run seed (data order, per-rank dropout streams).
        device: where the step computes.
        run_dir: where checkpoints and the best model are written.
        teacher_signal: ``batch -> ModelOutput`` (live or cached), ``None`` for FT.
        on_event: ``(kind, **kwargs)`` sink for reporters and lifecycle hooks (rank 0 only).
        progress: show a progress bar.
        save_every: write ``checkpoints/last`` every this many steps (besides evaluations).
        dist: the process group (:mod:`kdkit.engine.distributed`); one process by default.
    """

    student: Student
    method: KDMethod
    task: Task
    train: SplitData
    validation: SplitData
    cfg: TrainingConfig
    seed: int
    device: torch.device
    run_dir: Path
    teacher_signal: TeacherSignal | None = None
    on_event: EventSink = _ignore_event
    progress: bool = True
    save_every: int | None = None
    dist: Dist = field(default_factory=Dist)


class Trainer:
    """Trains ``setup.student`` with ``setup.method``, selecting on ``setup.validation``.

    One code path for one process and for several: the student and the method are one
    :class:`TrainModule`, wrapped by :func:`wrap` (DDP/FSDP over several ranks, the module itself
    on one), and every step runs on this rank's :meth:`Dist.share` of the global batch (the whole
    batch, weight 1, on one process). Over several ranks only rank 0 reports and writes files.
    """

    def __init__(self, setup: TrainSetup) -> None:
        self.setup = setup
        self.student, self.method, self.task = setup.student, setup.method, setup.task
        self.train_data, self.validation = setup.train, setup.validation
        self.cfg, self.seed, self.device = setup.cfg, setup.seed, setup.device
        self.run_dir = setup.run_dir
        self.teacher_signal = setup.teacher_signal
        self.on_event = setup.on_event
        self.dist = setup.dist
        self.requirements: Requirements = self.method.requirements
        module = TrainModule(self.student, self.method)
        # FSDP: a plain CPU copy that files are written from
        self._shadow: TrainModule | None = None
        if self.dist.enabled and self.dist.mode == "fsdp":
            self._shadow = copy.deepcopy(module.cpu())
            module.to(self.device)
        # wrap before collecting parameters: FSDP replaces them by sharded ones
        self.train_module: torch.nn.Module = wrap(module, self.dist, self.device)
        if self.dist.rank:  # dropout: independent streams per rank (rank 0 keeps the seed's)
            seed_everything(self.seed + 7919 * self.dist.rank)
        self.params = trainable_parameters(self.student, self.method)  # a LIST: clipping sees them
        cfg = self.cfg
        n_steps = steps_per_epoch(len(self.train_data), cfg.batch_size) * cfg.epochs
        self.total_steps = min(n_steps, cfg.max_steps) if cfg.max_steps else n_steps
        self.optimizer = build_optimizer(self.params, cfg)
        self.schedule = build_schedule(self.optimizer, self.total_steps, cfg.warmup_ratio)
        self.autocast, self.precision = precision_context(self.device, cfg.precision)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None
        self.state = TrainState()
        #: The step of the last checkpoint written or resumed from (``None``: none yet).
        self.checkpoint_step: int | None = None

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_state(self) -> dict[str, Any]:
        """Everything besides the weights that a resume needs.

        The method's tensors (parameters and persistent buffers) are saved with the weights
        (``method.safetensors``); what its :meth:`~kdkit.api.KDMethod.extra_state` returns (plain
        values, tensors) is saved here and handed back on resume.
        """
        optimizer = optimizer_state(self.train_module, self.optimizer, self.dist)
        state: dict[str, Any] = {
            "trainer": asdict(self.state),
            "optimizer": optimizer,
            "schedule": self.schedule.state_dict(),
            "rng": rng_state(),
            "method_extra": self.method.extra_state(),
        }
        if self.scaler is not None:  # fp16: the loss scale it has found (else it restarts at 2^16)
            state["grad_scaler"] = self.scaler.state_dict()
        if self.dist.enabled:  # each rank's own stream (collective: every rank calls this)
            state["rng_ranks"] = self.dist.all_gather_object(state["rng"])
        return state

    def restore(self, state: dict[str, Any]) -> list[str]:
        """Continue from a checkpoint's state (weights are loaded by the caller).

        The optimiser's and the schedule's hyperparameters are the *current* configuration's,
        not the checkpoint's: ``--resume RUN --set training.weight_decay=0`` (or ``lr``,
        ``adam_eps``, the schedule) after a NaN stop takes effect; the moments and step counts
        are the checkpoint's. Returns one line per setting that differs from the checkpoint's.
        """
        self.state = TrainState(**state["trainer"])
        if self._shadow is not None:  # the checkpoint's weights were read into the shadow
            import_full(self.train_module, self._shadow)
        fresh = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        load_optimizer_state(self.train_module, self.optimizer, state["optimizer"], self.dist)
        self.schedule.load_state_dict(state["schedule"])
        changed = self._apply_hyperparameters(fresh)
        if state.get("method_extra") is not None:  # absent in checkpoints of older versions
            self.method.load_extra_state(state["method_extra"])
        if self.scaler is not None and isinstance(state.get("grad_scaler"), dict):
            self.scaler.load_state_dict(state["grad_scaler"])
        ranks = state.get("rng_ranks")
        same_world = ranks is not None and len(ranks) == self.dist.world_size
        set_rng_state(ranks[self.dist.rank] if ranks is not None and same_world else state["rng"])
        if not same_world and self.dist.rank:  # another world size: fresh per-rank streams
            seed_everything(self.seed + 7919 * self.dist.rank + self.state.step)
        self.checkpoint_step = self.state.step
        return changed

    def _apply_hyperparameters(self, fresh: list[dict[str, Any]]) -> list[str]:
        """Put the configuration's hyperparameters (``fresh``: the param groups as built) back
        into the restored optimiser and schedule; the lr follows the schedule from the new base.
        """
        groups = self.optimizer.param_groups
        changed: list[str] = []
        for i, (group, new) in enumerate(zip(groups, fresh)):
            for key, value in new.items():
                if key in ("lr", "initial_lr"):
                    continue
                if group.get(key) != value:
                    changed.append(f"optimizer group {i} {key}: {group.get(key)} -> {value}")
                group[key] = value
        bases = [g.get("initial_lr", self.cfg.lr) for g in fresh]
        old = list(self.schedule.base_lrs)
        if old != bases:
            changed.append(f"base lr: {old[0] if old else None} -> {bases[0]}")
        self.schedule.base_lrs = bases
        step = self.schedule.last_epoch
        for group, base, factor in zip(groups, bases, self.schedule.lr_lambdas):
            group["initial_lr"] = base
            group["lr"] = base * factor(step)  # what LambdaLR computes: exact when unchanged
        self.schedule._last_lr = [g["lr"] for g in groups]  # what get_last_lr() returns
        return changed

    def load_targets(self) -> tuple[Student, KDMethod]:
        """The (student, method) a checkpoint is read into before :meth:`restore`."""
        if self._shadow is not None:
            return self._shadow.student, self._shadow.method
        return self.student, self.method

    def saved_modules(self) -> tuple[Student, KDMethod]:
        """The (student, method) files are written from: themselves, or under FSDP the shadow
        filled with the gathered weights (a collective: every rank calls it)."""
        if self._shadow is None:
            return self.student, self.method
        export_full(self.train_module, self._shadow)
        return self._shadow.student, self._shadow.method

    def save_checkpoint(self) -> None:
        """Atomically write ``checkpoints/last`` (rank 0; the others wait until it is written)."""
        student, method = self.saved_modules()
        state = self.checkpoint_state()
        if self.dist.is_main:  # a second checkpoint of one step does not push out previous
            rotate = self.checkpoint_step != self.state.step
            write_checkpoint(self.run_dir, student, method, state, rotate=rotate)
        self.dist.barrier()
        self.checkpoint_step = self.state.step

    def _write_best(self) -> None:
        student, _ = self.saved_modules()
        if self.dist.is_main:
            write_model(self.run_dir / "best" / "model", student)

    def nan_fix(self) -> str:
        """What to do after a non-finite loss: resume the kept checkpoint with a change, or
        (none written yet) run the same command again with a change."""
        lower = f"--set training.lr={self.cfg.lr / 10:g}"
        if self.checkpoint_step is not None:
            return (
                f"the last good checkpoint (step {self.checkpoint_step}) is kept in "
                f"{self.run_dir / 'checkpoints' / 'last'}: resume it with a change, e.g. "
                f"`kdkit run --resume {self.run_dir} {lower}` (or --set "
                "training.weight_decay=0, training.max_grad_norm=1.0; a resume applies changed "
                "optimizer settings), or check the method's weights/temperature"
            )
        return (
            "no checkpoint was written before this step, so there is nothing to resume: run "
            f"the same `kdkit run` command again with a change, e.g. `{lower}` (or --set "
            "training.max_grad_norm=1.0, or a smaller method temperature/weight); the directory "
            "is reused and this attempt's metrics move to stopped-attempt/"
        )

    # ------------------------------------------------------------------ one step
    def progress_at(self, step: int) -> Progress:
        """The :class:`~kdkit.api.Progress` the method sees during optimisation step ``step``."""
        return Progress(step=step, total_steps=self.total_steps, epoch=self.state.epoch)

    def train_step(self, rows: list[int]) -> dict[str, float]:
        """One optimisation step on the global batch ``rows``; returns the record reporters get.

        This rank computes its :meth:`Dist.share` of ``rows`` (all of them on one process) and
        scales its per-row-mean loss by the share's weight, so that DDP's gradient average over
        ranks is the gradient of the global batch's mean (weight 1 on one process). The terms
        recorded are the global batch's (a row-weighted mean over ranks): every rank sees the
        same values, so all of them stop together on a non-finite term instead of hanging.
        """
        # region(...): the named ranges `kdkit profile` times (kdkit.profiling.regions); free
        # (a shared nullcontext) when nothing profiles. The student_forward and loss_forward
        # ranges open inside TrainModule.forward.
        share = self.dist.share(rows)
        step = self.state.step + 1
        with region("data"):
            batch = self.train_data.batch(share.rows).to(self.device)
            batch.progress = self.progress_at(step)
        teacher_out = None
        if self.requirements.teacher is not None and self.teacher_signal is not None:
            with region("teacher"):
                teacher_out = self.teacher_signal(batch)  # no grad: detached or cached tensors
        self.train_module.train()
        with self.autocast(), real_rows(share.count):  # relational terms: the real rows only
            terms = self.train_module(batch.student, self.requirements.student, teacher_out, batch)
        with region("loss_forward"):
            loss = sum(terms.values())
            local = {k: float(v.detach()) for k, v in terms.items()}
            values = self.dist.weighted_mean({**local, "loss": float(loss.detach())}, share.count)
        total = values.pop("loss")
        for name, value in values.items():
            if not math.isfinite(value):
                raise NonFiniteLossError(
                    f"loss term '{name}' is {value:.4g} at step {step}",
                    where=str(self.run_dir),
                    fix=self.nan_fix(),
                )
        with region("backward"):
            self.optimizer.zero_grad(set_to_none=True)
            scaled = loss * share.weight  # one process: weight 1.0, the product is exactly loss
            if self.scaler is not None:
                self.scaler.scale(scaled).backward()
            else:
                scaled.backward()  # several ranks: DDP/FSDP average the gradients here
            del terms, loss, scaled  # free the autograd graph here, not at the return
        with region("optimizer"):
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
                grad_norm = clip_gradients(self.params, self.cfg.max_grad_norm)
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                grad_norm = clip_gradients(self.params, self.cfg.max_grad_norm)
                self.optimizer.step()
            lr = float(self.schedule.get_last_lr()[0])
            self.schedule.step()
        return {**values, "loss": total, "lr": lr, "grad_norm": grad_norm}

    # ------------------------------------------------------------------ evaluation
    def evaluate(self) -> dict[str, float]:
        """Validation metrics; saves the best student and counts evaluations without gain."""
        bs = self.cfg.eval_batch_size or 2 * self.cfg.batch_size
        logits = predict_logits(
            self.student, self.validation, bs, self.device, self.autocast, dist=self.dist
        )
        metrics = self.task.evaluate(logits, self.validation.labels)
        head = float(metrics[self.task.headline_metric])
        st = self.state
        if st.best_metric is None or head > st.best_metric:
            st.best_metric, st.best_step, st.evals_without_gain = head, st.step, 0
            self._write_best()
        else:
            st.evals_without_gain += 1
        st.history.append({"step": st.step, "epoch": st.epoch, "split": "validation", **metrics})
        if self.dist.is_main:
            self.on_event("evaluation", step=st.step, split="validation", metrics=metrics)
        patience = self.cfg.early_stopping_patience
        if patience is not None and st.evals_without_gain >= patience:
            st.stopped_early = True
        return metrics

    # ------------------------------------------------------------------ the loop
    def fit(self) -> TrainState:
        """Train until the epochs or ``max_steps`` are done, or early stopping says stop."""
        cfg, st = self.cfg, self.state
        n = len(self.train_data)
        bar = progress_bar(
            total=self.total_steps,
            initial=st.step,
            desc="train",
            unit="step",
            disable=not self.setup.progress or not self.dist.is_main,
            dynamic_ncols=True,
        )
        try:
            while st.epoch < cfg.epochs and st.step < self.total_steps and not st.stopped_early:
                all_batches = list(batches_of(epoch_order(n, self.seed, st.epoch), cfg.batch_size))
                for rows in all_batches[st.batch_in_epoch :]:
                    t0 = time.perf_counter()
                    record = self.train_step(rows)
                    dt = time.perf_counter() - t0
                    st.step += 1
                    st.batch_in_epoch += 1
                    st.train_seconds += dt
                    st.examples_seen += len(rows)
                    record["examples_per_s"] = len(rows) / dt if dt > 0 else math.inf
                    record["epoch"] = st.epoch
                    if self.dist.is_main:
                        self.on_event("step", step=st.step, record=record)
                    bar.update(1)
                    bar.set_postfix(
                        loss=f"{record['loss']:.4f}", ex_s=f"{record['examples_per_s']:.0f}"
                    )
                    if cfg.eval_every and st.step % cfg.eval_every == 0:
                        self.evaluate()
                        self.save_checkpoint()
                    elif self.setup.save_every and st.step % self.setup.save_every == 0:
                        self.save_checkpoint()
                    if st.step >= self.total_steps or st.stopped_early:
                        break
                if st.batch_in_epoch >= len(all_batches):
                    st.epoch += 1
                    st.batch_in_epoch = 0
                    if not cfg.eval_every:
                        self.evaluate()
                    self.save_checkpoint()
            if not st.history or st.history[-1]["step"] != st.step:
                self.evaluate()  # the last steps are always evaluated
                self.save_checkpoint()
        finally:
            bar.close()
        return st
