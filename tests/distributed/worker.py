"""The 2-process side of the distributed tests; every rank runs this file under torchrun.

Usage: ``python -m torch.distributed.run --nproc_per_node 2 worker.py OUT_DIR``

It joins one gloo group and runs, in order (rank 0 writes the results under ``OUT_DIR``):

1. ``eval``: a seeded tiny student's logits over the tiny train split, predicted by both ranks
   and gathered (batch sizes 3, 5 and 64 — the last leaves rank 1 without a batch);
2. ``cache``: a teacher-output cache built by both ranks (7-row shard files, so each rank writes
   several), then loaded again through the "exists" path; and a token-state entry (bf16,
   10-row shards of 5-row batches: each rank writes two of the four);
3. ``runs``: the tiny KD run (``kd``, global batch 5: uneven 3/2 shares), the tiny FT run with
   global batch 31 (the last batch's single row leaves rank 1 an empty share), and the KD run
   interrupted after step 5 on every rank and resumed;
   ``fsdp``: run A and its interrupted-and-resumed copy with ``training.distributed: fsdp``;
4. ``cli``: ``kdkit run FILE --quiet`` through the real CLI (the documented launch), with the
   tiny test plugins added to the plugins the CLI loads.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.distributed as tdist  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from kdkit.api import Needs  # noqa: E402
from kdkit.discovery import load_plugins  # noqa: E402
from kdkit.engine import teacher_cache, token_cache  # noqa: E402
from kdkit.engine.batching import EncodedRows, Encoder, make_split, split_examples  # noqa: E402
from kdkit.engine.distributed import setup  # noqa: E402
from kdkit.engine.loop import Trainer, predict_logits  # noqa: E402
from kdkit.engine.runner import run_once  # noqa: E402
from kdkit.errors import KdkitError, NonFiniteLossError  # noqa: E402
from kdkit.testing.tiny import TinyStudent, TinyTask, TinyTeacher  # noqa: E402
from tests.engine import tinyplug  # noqa: E402
from tests.engine.conftest import tiny_config  # noqa: E402

#: What the distributed and the single-process side share (the tests import these).
EVAL_BATCH_SIZES = (3, 5, 64)
CACHE_NEEDS = Needs(pooled_layers=(1, 2), embedding=True)
CACHE_SHARD_ROWS = 7
TOKEN_NEEDS = Needs(hidden_layers=(1, 3), pooled_layers=(2,))
TOKEN_SHARD_ROWS = 10
RUN_A = ("training.batch_size=5", "student.dropout=0", "training.save_every=2")
RUN_B = ("method=ft", "training.batch_size=31", "student.dropout=0")
RUN_F = (*RUN_A, "training.distributed=fsdp")
RUN_NAN = ("method={name: nan-at, step: 6}", "training.save_every=2", "training.batch_size=5")
INTERRUPT_AFTER = 5


def tiny_student() -> TinyStudent:
    """The seeded student both sides evaluate."""
    torch.manual_seed(0)
    return TinyStudent(layers=1, hidden=16).eval()


def eval_part(out: Path, dist) -> None:
    task = TinyTask()
    student = tiny_student()
    split = make_split("train", task.load()["train"], False, 64, Encoder(student.encode))
    results = {}
    for bs in EVAL_BATCH_SIZES:
        logits = predict_logits(student, split, bs, torch.device("cpu"), dist=dist)
        results[f"bs{bs}"] = logits
    if dist.is_main:
        save_file(results, str(out / "eval_logits.safetensors"))


def cache_part(out: Path, dist) -> None:
    teacher_cache.SHARD_ROWS = CACHE_SHARD_ROWS
    task = TinyTask()
    teacher = TinyTeacher()
    examples = split_examples(task.load()["train"], False)
    rows = EncodedRows.build(teacher.encode, examples, 64, 0)
    job = teacher_cache.TeacherPass(
        teacher, CACHE_NEEDS, rows, torch.device("cpu"), 5, progress=False, dist=dist
    )
    slot = teacher_cache.CacheSlot("train", task.fingerprint(), 64, out / "cache-dist")
    built = teacher_cache.load_or_build(job, slot)
    loaded = teacher_cache.load_or_build(job, slot)  # rank 0 sees the entry: every rank reads it
    same = all(torch.equal(built.tensors[k], loaded.tensors[k]) for k in built.tensors)
    flags = dist.all_gather_object(same)
    if dist.is_main:
        (out / "cache_reload.json").write_text(json.dumps({"reloaded_equal": flags}))
    teacher_cache.SHARD_ROWS = 4096
    token_cache.TOKEN_SHARD_ROWS = TOKEN_SHARD_ROWS
    job = teacher_cache.TeacherPass(
        teacher, TOKEN_NEEDS, rows, torch.device("cpu"), 5, progress=False, dist=dist
    )
    tokens = teacher_cache.load_or_build(job, slot)  # every rank reads the entry back
    states, mask, _ = tokens.tokens.lookup(torch.arange(len(rows)), torch.device("cpu"))
    if dist.is_main:
        save_file(
            {"mask": mask, **{f"hidden.{k}": v for k, v in states.items()}},
            str(out / "token_lookup.safetensors"),
        )
    token_cache.TOKEN_SHARD_ROWS = 1024


def runs_part(out: Path, dist, plugins) -> None:
    run_once(tiny_config(plugins, out / "run-a", *RUN_A), plugins, progress=False)
    run_once(tiny_config(plugins, out / "run-b", *RUN_B), plugins, progress=False)
    interrupted_and_resumed(out / "run-c", RUN_A, dist, plugins)
    # a user error found by rank 0 alone (the run directory exists) must reach every rank
    record_what_stopped(
        out, "run-a", RUN_A, KdkitError, "run-a-again.json", "errors", dist, plugins
    )
    # a NaN loss term stops every rank at the same step (none is left waiting in a collective)
    record_what_stopped(
        out, "run-nan", RUN_NAN, NonFiniteLossError, "run-nan.json", "stopped", dist, plugins
    )


def record_what_stopped(
    out: Path, run: str, overrides, error: type[KdkitError], file: str, key: str, dist, plugins
) -> None:
    """Run ``run`` on every rank; rank 0 writes each rank's ``error`` message (or null) to ``file``."""
    try:
        run_once(tiny_config(plugins, out / run, *overrides), plugins, progress=False)
        what = None
    except error as exc:
        what = exc.what
    whats = dist.all_gather_object(what)
    if dist.is_main:
        (out / file).write_text(json.dumps({key: whats}))


def fsdp_part(out: Path, dist, plugins) -> None:
    run_once(tiny_config(plugins, out / "run-f", *RUN_F), plugins, progress=False)
    interrupted_and_resumed(out / "run-g", RUN_F, dist, plugins)


def interrupted_and_resumed(run_dir: Path, overrides, dist, plugins) -> None:
    """Stop a run after step ``INTERRUPT_AFTER`` on every rank, then resume it."""
    original = Trainer.train_step

    def interrupted(self, rows):
        if self.state.step == INTERRUPT_AFTER:
            raise KeyboardInterrupt  # on every rank: a job stopped by the scheduler
        return original(self, rows)

    Trainer.train_step = interrupted
    try:
        run_once(tiny_config(plugins, run_dir, *overrides), plugins, progress=False)
    except KeyboardInterrupt:
        pass
    finally:
        Trainer.train_step = original
    dist.barrier()
    if dist.is_main:
        (run_dir.parent / f"{run_dir.name}-interrupted.json").write_text(
            json.dumps({"summary_exists": (run_dir / "summary.json").exists()})
        )
    run_once(
        tiny_config(plugins, run_dir, *overrides), plugins, resume=str(run_dir), progress=False
    )


def cli_part(out: Path, dist, plugins) -> int:
    import kdkit.cli.run as cli_run
    from kdkit.cli import main

    cli_run.load_plugins = lambda: plugins  # the CLI's own loading, plus the tiny test plugins
    return main(["run", str(out / "cli.yaml"), "--quiet"])


def main(out: Path) -> int:
    tdist.init_process_group("gloo")
    dist, _ = setup("auto", "cpu")  # joins the group created above (it stays open)
    plugins = load_plugins(distributions={"kdkit"}, extra=[("tiny-test", tinyplug)])
    parts = sys.argv[2:] or ["eval", "cache", "runs", "fsdp", "cli"]
    rc = 0
    if "eval" in parts:
        eval_part(out, dist)
    if "cache" in parts:
        cache_part(out, dist)
    if "runs" in parts:
        runs_part(out, dist, plugins)
    if "fsdp" in parts:
        fsdp_part(out, dist, plugins)
    if "cli" in parts:
        rc = cli_part(out, dist, plugins)
    dist.barrier()
    tdist.destroy_process_group()
    return rc


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
