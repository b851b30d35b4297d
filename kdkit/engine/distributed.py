"""Data-parallel distillation on ``torch.distributed``: process group, rank helpers, wrapping.

kdkit does not ship its own launcher or communication layer: processes are started by
``torchrun`` (or any launcher that sets the same environment: ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), gradients are averaged by
:class:`torch.nn.parallel.DistributedDataParallel` (or sharded by FSDP), and results are gathered
with ``torch.distributed`` collectives. This module holds everything rank-aware:

* :func:`setup` / :meth:`Dist.close` — join and leave the process group (nccl on CUDA, gloo on
  CPU); ``training.distributed: auto`` turns on DDP exactly when a launcher set ``WORLD_SIZE > 1``.
* :func:`split_rows` — each rank's share of a global batch: the union of the ranks' shares is
  the single-process batch, so DDP's gradient average reproduces a single-process step
  (up to float summation order) when each rank's loss is scaled by :func:`loss_weight`.
* :func:`rank_batches` and :meth:`Dist.gather_rows` — disjoint evaluation/cache work without
  padding duplicates, gathered back into row order on every rank.
* :func:`wrap` — DDP or FSDP around the trained module.
* :func:`global_rows` — the global batch's rows of a tensor on every rank, with gradients: what
  batch-relational loss terms (contrastive, RKD, DIST's intra-class term) compute on, so a
  multi-process run has the one-process loss and gradients.
* :meth:`Dist.share` — this rank's rows and loss weight for one global batch.

With one process every helper is the identity (:func:`wrap` returns the module, a share is the
whole batch with weight 1, reductions return their input), so the engine has one training step
and one evaluation for one process and for several. Teacher-cache work shared over ranks lives in
:mod:`kdkit.engine.teacher_cache`, which builds on these helpers (this module imports no other
engine module).
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

import torch
import torch.distributed as tdist

from kdkit.api import Batch, Encoded, KDMethod, LossTerms, ModelOutput, Needs, Student
from kdkit.errors import KdkitError
from kdkit.profiling.regions import region

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from torch.distributed.checkpoint.state_dict import StateDictOptions

T = TypeVar("T")

#: Seconds a collective may wait for the other ranks before failing (a crashed peer, a stuck
#: rank). Override with ``KDKIT_DIST_TIMEOUT``.
DEFAULT_TIMEOUT_S = 1800
#: Seconds the other ranks wait while rank 0 builds the run's components first (datasets,
#: tokenizers, a kdkit-trained teacher: can take hours). Override with ``KDKIT_BUILD_TIMEOUT``.
BUILD_TIMEOUT_S = 24 * 3600


@dataclass
class Dist:
    """Where this process stands in the job: mode, rank, world size, backend, device.

    ``mode`` is ``none`` (one process), ``ddp`` or ``fsdp``.
    """

    mode: str = "none"
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    owns_group: bool = False  # we initialised the process group, so we destroy it
    wait_group: tdist.ProcessGroup | None = (
        None  # a gloo group with a long timeout, for waits on rank 0's builds
    )

    @property
    def enabled(self) -> bool:
        """Whether more than one process takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only rank that reports, writes checkpoints, summaries and predictions."""
        return self.rank == 0

    def describe(self) -> dict[str, Any]:
        """What a distributed run's summary records."""
        return {"mode": self.mode, "world_size": self.world_size, "backend": self.backend}

    # ------------------------------------------------------------------ synchronisation
    def barrier(self) -> None:
        """Wait for every rank (no-op on one process)."""
        if self.enabled:
            tdist.barrier()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (building caches: datasets, tokenizers, teachers); the
        other ranks run it after, and find what rank 0 cached instead of building it again."""
        if self.enabled and not self.is_main:
            self._long_barrier()
        yield
        if self.enabled and self.is_main:
            self._long_barrier()

    def _long_barrier(self) -> None:
        # training a kdkit teacher can outlast the collectives' timeout: wait in a group of its own
        if self.wait_group is not None:
            tdist.barrier(group=self.wait_group)
        else:
            self.barrier()

    def on_main(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 only and hand its result (or its :class:`KdkitError`) to all.

        A user error on rank 0 (a run directory that already exists, ...) is raised on every
        rank instead of leaving the others waiting at the next collective.
        """
        if not self.enabled:
            return fn()
        box: list[Any] = [None]
        if self.is_main:
            try:
                box[0] = ("ok", fn())
            except KdkitError as exc:
                box[0] = ("error", (exc.what, exc.where, exc.fix))
        tdist.broadcast_object_list(box, src=0)
        kind, value = box[0]
        if kind == "error":
            what, where, fix = value
            raise KdkitError(what, where=where, fix=fix)
        return value

    def all_gather_object(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (small Python objects: random states, flags)."""
        if not self.enabled:
            return [value]
        out: list[Any] = [None] * self.world_size
        tdist.all_gather_object(out, value)
        return out

    # ------------------------------------------------------------------ reductions
    def _comm_device(self) -> torch.device:
        # nccl moves CUDA tensors only; gloo CPU tensors
        return (
            torch.device("cuda", torch.cuda.current_device())
            if self.backend == "nccl"
            else (torch.device("cpu"))
        )

    def weighted_mean(self, values: dict[str, float], count: int) -> dict[str, float]:
        """``sum_r count_r * values_r / sum_r count_r`` per key: the global mean of per-row means.

        A rank with ``count == 0`` contributes exactly nothing (even if its values are NaN).
        """
        if not self.enabled:
            return dict(values)
        keys = sorted(values)
        local = torch.tensor([float(values[k]) for k in keys] + [1.0], dtype=torch.float64)
        local = local * count if count else torch.zeros_like(local)  # 0 * NaN would be NaN
        local = local.to(self._comm_device())
        tdist.all_reduce(local)
        total = float(local[-1])
        return {k: float(local[i]) / total for i, k in enumerate(keys)}

    def share(self, rows: Sequence[int]) -> Share:
        """This rank's :class:`Share` of the global batch ``rows``: all of it on one process.

        The shares of all ranks concatenated in rank order are ``rows`` (:func:`split_rows`), and
        their weights make DDP's gradient average the gradient of the global batch's mean.
        """
        local = split_rows(rows, self.rank, self.world_size)
        weight = loss_weight(len(local), len(rows), self.world_size)
        # an empty share still runs a step on a real row, with weight 0: it adds exactly nothing
        return Share(local or list(rows[:1]), len(local), weight)

    def gather_rows(self, values: torch.Tensor, rows: Sequence[int], total: int) -> torch.Tensor:
        """Assemble ``[total, ...]`` on every rank from each rank's ``values[i]`` of row ``rows[i]``.

        Ranks may hold different numbers of rows: each pads its part to the largest one for the
        all-gather, and the padding is dropped by row index (it never reaches a metric). Every
        row must be held by exactly one rank.
        """
        values = values.detach()
        if not self.enabled:
            out = torch.empty((total, *values.shape[1:]), dtype=values.dtype)
            out[torch.as_tensor(list(rows), dtype=torch.long)] = values.cpu()
            return out
        device = self._comm_device()
        counts = [int(c) for c in self.all_gather_object(len(rows))]
        width = max(counts)
        pad_vals = torch.zeros((width, *values.shape[1:]), dtype=values.dtype, device=device)
        pad_vals[: len(rows)] = values.to(device)
        pad_rows = torch.full((width,), -1, dtype=torch.long, device=device)
        pad_rows[: len(rows)] = torch.as_tensor(list(rows), dtype=torch.long)
        all_vals = [torch.empty_like(pad_vals) for _ in range(self.world_size)]
        all_rows = [torch.empty_like(pad_rows) for _ in range(self.world_size)]
        tdist.all_gather(all_vals, pad_vals)
        tdist.all_gather(all_rows, pad_rows)
        out = torch.empty((total, *values.shape[1:]), dtype=values.dtype)
        seen = torch.zeros(total, dtype=torch.long)
        for r in range(self.world_size):
            idx = all_rows[r][: counts[r]].cpu()
            out[idx] = all_vals[r][: counts[r]].cpu()
            seen.index_add_(0, idx, torch.ones_like(idx))  # counts repeats too
        if not bool((seen == 1).all()):  # an engine bug, never a user's: say so loudly
            raise RuntimeError(f"gathered rows are not a partition of 0..{total - 1}")
        return out

    # ------------------------------------------------------------------ teardown
    def close(self) -> None:
        """Leave the process group if :func:`setup` created it."""
        if self.wait_group is not None and tdist.is_initialized():
            tdist.destroy_process_group(self.wait_group)
            self.wait_group = None
        if self.owns_group and tdist.is_initialized():
            tdist.destroy_process_group()
            self.owns_group = False


def launcher_env() -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` set by ``torchrun`` (or Slurm/other launchers that set
    the same variables), or ``None`` when this process was started alone."""
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return None
    try:
        world = int(os.environ["WORLD_SIZE"])
        rank = int(os.environ["RANK"])
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise KdkitError(
            "RANK/WORLD_SIZE/LOCAL_RANK are not integers",
            where="environment",
            fix="launch with `torchrun --nproc_per_node N -m kdkit run FILE`",
        ) from None
    return rank, world, local


def setup(mode: str, device: str = "auto") -> tuple[Dist, str]:
    """Join the process group the launcher describes; returns the :class:`Dist` and the device.

    Args:
        mode: ``training.distributed``: ``auto`` (DDP when launched with ``WORLD_SIZE > 1``,
            else one process), ``none`` (always one process: with several launched processes
            each would train alone, so that is refused), ``ddp`` or ``fsdp``.
        device: ``training.device``; under a launcher, ``auto``/``cuda`` become
            ``cuda:LOCAL_RANK`` (one GPU per process).
    """
    env = launcher_env()
    if env is None or env[1] <= 1:
        if mode in ("ddp", "fsdp") and env is None:
            print(
                f"kdkit: training.distributed is {mode} but the run was not started by a "
                "launcher (torchrun): running on one process",
                file=sys.stderr,
            )
        return Dist(), device
    rank, world, local = env
    if mode == "none":
        raise KdkitError(
            f"training.distributed is none but the launcher started {world} processes",
            where="training.distributed",
            fix="set training.distributed: auto (or ddp/fsdp), or launch one process",
        )
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise KdkitError(
                "training.device asks for CUDA but no GPU is visible",
                where="training.device",
                fix="set training.device: cpu (or auto)",
            )
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    else:
        device = "cpu"
    backend = "nccl" if use_cuda else "gloo"
    owns = False
    if not tdist.is_initialized():
        timeout = datetime.timedelta(
            seconds=int(os.environ.get("KDKIT_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
        )
        tdist.init_process_group(backend=backend, init_method="env://", timeout=timeout)
        owns = True
    else:
        backend = tdist.get_backend()
    resolved = "ddp" if mode == "auto" else mode
    build_s = int(os.environ.get("KDKIT_BUILD_TIMEOUT", BUILD_TIMEOUT_S))
    wait = tdist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=build_s))
    return Dist(resolved, rank, world, local, backend, owns, wait), device


# ------------------------------------------------------------- batch-relational loss terms

#: Rows of the current training step's input that are really this rank's (None: all of them);
#: set by the training step around the method's forward (a stand-in row of an empty share is
#: computed but must not join the global batch).
_REAL_ROWS: contextvars.ContextVar[int | None] = contextvars.ContextVar("real_rows", default=None)


@contextlib.contextmanager
def real_rows(count: int) -> Iterator[None]:
    """Within this block :func:`global_rows` takes only the first ``count`` rows of each rank."""
    token = _REAL_ROWS.set(count)
    try:
        yield
    finally:
        _REAL_ROWS.reset(token)


def global_rows(x: torch.Tensor) -> torch.Tensor:
    """The whole global batch's rows of ``x`` ``[b_r, ...]``, in rank order, with gradients.

    For loss terms that relate the rows of a batch to each other (contrastive negatives, RKD's
    distances and angles, DIST's per-class correlations): every rank computes the term on the
    rows of ALL ranks — the single-process batch (shares concatenated in rank order are the
    global batch, :func:`split_rows`). Gradients flow back to each rank's own rows, summed over
    the ranks' copies of the term (``torch.distributed.nn``'s all_gather backward); with the
    engine's :func:`loss_weight` factors (which sum to the world size) DDP's average then equals
    the single-process gradient exactly, also for uneven last batches. One process (or no
    process group): ``x`` itself. A collective: every rank calls it, in the same order.
    """
    count = _REAL_ROWS.get()
    if count is not None:
        x = x[:count]
    if not (tdist.is_available() and tdist.is_initialized()) or tdist.get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    world = tdist.get_world_size()
    sizes = torch.tensor([x.shape[0]], device=x.device)
    all_sizes = [torch.zeros_like(sizes) for _ in range(world)]
    tdist.all_gather(all_sizes, sizes)
    counts = [int(n) for n in all_sizes]
    widest = max(counts)
    # all_gather needs one shape on every rank: pad the shorter shares (differentiable)
    pad = x.new_zeros((widest - x.shape[0], *x.shape[1:]))
    parts = all_gather(torch.cat([x, pad]) if widest > x.shape[0] else x)
    return torch.cat([part[:n] for part, n in zip(parts, counts, strict=True)])


# ---------------------------------------------------------------------------- who does what


def split_rows(rows: Sequence[int], rank: int, world: int) -> list[int]:
    """Rank ``rank``'s contiguous share of a global batch; shares differ by at most one row.

    ``[0..9]`` over 4 ranks -> ``[0,1,2] [3,4,5] [6,7] [8,9]``. The shares concatenated in rank
    order are ``rows``; a batch smaller than the world leaves some ranks empty.
    """
    n = len(rows)
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return list(rows[start : start + base + (1 if rank < extra else 0)])


def loss_weight(local: int, global_: int, world: int) -> float:
    """Factor for a rank's per-row-mean loss so that DDP's gradient *average* over ranks equals
    the gradient of the global batch's mean: ``local * world / global``.

    ``mean_r(w_r * mean_r) = sum_r local_r * mean_r / global`` — the single-process mean, also
    for the last, uneven batch of an epoch.
    """
    return local * world / global_


@dataclass(frozen=True)
class Share:
    """This rank's part of one global batch (see :meth:`Dist.share`).

    Attributes:
        rows: the rows this rank computes; a rank with no real row of a small last batch gets
            one real row (DDP's all-reduce needs every rank to run the step) with ``weight`` 0.
        count: how many of ``rows`` are really this rank's (0 for such a stand-in row).
        weight: factor for this rank's per-row-mean loss (:func:`loss_weight`); 1 on one process.
    """

    rows: list[int]
    count: int
    weight: float


def rank_batches(batches: Sequence[T], rank: int, world: int) -> list[T]:
    """Rank ``rank``'s batches of a fixed batch plan: batch ``k`` goes to rank ``k % world``.

    Distributing whole batches of the single-process plan (not rows) keeps every batch's padding
    and shape as on one process, so each row's output is bit-identical to a single-process pass.
    """
    return list(batches[rank::world])


def wrap(module: torch.nn.Module, dist: Dist, device: torch.device) -> torch.nn.Module:
    """The module the training step calls: DDP, FSDP (``fully_shard``) or ``module`` itself.

    DDP broadcasts rank 0's parameters at wrap time (every rank starts from the same weights even
    if a plugin's initialisation was not seeded) and averages gradients during ``backward``.
    ``static_graph`` is on: DDP learns in the first step which parameters the method uses (a
    method may leave some projections or student layers out) and needs no graph traversal after;
    it requires that set to stay the same every step, which holds for kdkit's methods.
    """
    if not dist.enabled:
        return module
    if dist.mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        if isinstance(module, TrainModule):  # the student is its own unit: evaluation calls it
            fully_shard(module.student)
        return cast(torch.nn.Module, fully_shard(module))
    from torch.nn.parallel import DistributedDataParallel

    # device_ids=None: the module is on its one device already and batches are moved by the
    # engine, so DDP need not walk kdkit's input dataclasses to move them
    return DistributedDataParallel(module, device_ids=None, static_graph=True)


class TrainModule(torch.nn.Module):
    """Student and method as one module, so one DDP/FSDP wrapper syncs both sets of parameters.

    ``forward(student_inputs, needs, teacher_out, batch) -> {term: loss}``.
    """

    def __init__(self, student: Student, method: KDMethod) -> None:
        super().__init__()
        self.student = student
        self.method = method

    def forward(
        self, inputs: Encoded, needs: Needs, teacher_out: ModelOutput | None, batch: Batch
    ) -> LossTerms:
        """The method's loss terms for one (per-rank) batch (in the profiler's named regions)."""
        with region("student_forward"):
            out = self.student(inputs, needs)
        with region("loss_forward"):
            return self.method(out, teacher_out, batch)


# ---------------------------------------------------------------------------- FSDP state


def _full() -> StateDictOptions:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True)  # every rank receives the whole tensors


def export_full(module: torch.nn.Module, shadow: torch.nn.Module) -> torch.nn.Module:
    """Copy an FSDP module's weights, gathered whole, into its plain ``shadow`` (collective).

    The shadow is an unsharded copy made before wrapping; it is what checkpoints and saved
    models are written from, so files look the same as a one-process run's.
    """
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    full = get_model_state_dict(module, options=_full())
    tensors = cast(dict[str, torch.Tensor], full)
    shadow.load_state_dict({k: v.cpu() for k, v in tensors.items()})  # the shadow lives on CPU
    return shadow


def import_full(module: torch.nn.Module, shadow: torch.nn.Module) -> None:
    """Load the plain ``shadow``'s weights into the FSDP ``module`` (each rank keeps its shard)."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    set_model_state_dict(module, shadow.state_dict(), options=_full())


def optimizer_state(
    module: torch.nn.Module, optimizer: torch.optim.Optimizer, dist: Dist
) -> dict[str, Any]:
    """The optimiser's state; under FSDP gathered whole and keyed by parameter name (collective)."""
    if dist.mode != "fsdp" or not dist.enabled:
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(module, optimizer, options=_full())


def load_optimizer_state(
    module: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any], dist: Dist
) -> None:
    """Inverse of :func:`optimizer_state`."""
    if dist.mode != "fsdp" or not dist.enabled:
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(module, optimizer, optim_state_dict=state, options=_full())
