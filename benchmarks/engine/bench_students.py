"""GRU vs Transformer students of the same size: FT training step and batch-1 latency.

    python benchmarks/engine/bench_students.py [--sizes 0.06M 0.25M] [--repeats 5] [--steps 3]
        [--threads 1] [--max-length 128] [--out benchmarks/engine/results-students.json]

Not a test: numbers depend on the machine. The machine this project runs on is shared, so every
number is a RATIO measured inside one process: the models are timed in turns (GRU fast path,
GRU on packed ``nn.GRU`` = the implementation before, Transformer, teacher), ``--repeats``
rounds, and each ratio is the median over rounds of that round's ratio. Times are the process's
CPU time (one torch thread), so waiting for a core on a loaded machine does not count.

* **step**: one FT optimisation step (forward, cross-entropy, backward, AdamW) on a batch of 32
  real code rows of kdkit's tiny task (stdlib functions), padded to the batch's longest row;
* **latency**: one forward pass at batch 1 (no grad, ``eval()``), the efficiency report's
  measure; the teacher is the offline study's ``code-teacher`` shape (RoBERTa 2 x 128, BPE
  4,000, 4 heads; untrained: time does not depend on the weights).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from kdkit.api import BuildContext, Encoded, Needs
from kdkit.plugins.students import gru, transformer
from kdkit.testing.tiny import TinyTask


def packed_logits(net: gru.BiGRUClassifier, enc: Encoded) -> torch.Tensor:
    """The GRU as it ran before (packed ``nn.GRU`` per layer): the baseline of the fast path."""
    lengths = enc.attention_mask.sum(1).clamp(min=1)
    x = net.drop(net.embed(enc.input_ids))
    final = x[:, 0]
    for i, layer in enumerate(net.layers, start=1):
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        seq, h_n = layer(packed)
        x, _ = pad_packed_sequence(seq, batch_first=True, total_length=x.shape[1])
        final = torch.cat([h_n[0], h_n[1]], dim=-1)
        if i < len(net.layers):
            x = net.drop(x)
    return net.out(net.drop(torch.tanh(net.dense(net.drop(final)))))


def timed(fn: Callable[[], Any], n: int) -> float:
    """Median CPU seconds of ``n`` calls of ``fn`` after one warm-up call.

    CPU time of the process (``time.process_time``; one torch thread), not wall time: on a
    shared machine a wall clock also counts the time the process waited for a core."""
    fn()
    times = []
    for _ in range(n):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return statistics.median(times)


def measure_size(
    size: str,
    ctx: BuildContext,
    batch: list[str],
    single: str,
    teacher: nn.Module,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Every number of one size (module docstring), models timed in turns."""
    task = ctx.task
    assert task is not None
    torch.manual_seed(0)
    g = gru.build_gru_student(gru.GRUOptions(size=size), ctx)
    t = transformer.build_transformer_student(transformer.TransformerOptions(size=size), ctx)
    labels = torch.arange(len(batch)) % len(task.labels)
    g_enc, t_enc = g.encode(batch, args.max_length), t.encode(batch, args.max_length)
    opt_g = torch.optim.AdamW(g.parameters(), lr=1e-4)
    opt_t = torch.optim.AdamW(t.parameters(), lr=1e-4)

    def step(logits: Callable[[], torch.Tensor], opt: torch.optim.Optimizer) -> None:
        opt.zero_grad()
        nn.functional.cross_entropy(logits(), labels).backward()
        opt.step()

    steps = {
        "gru": lambda: step(lambda: g(g_enc, Needs()).logits, opt_g),
        "gru-packed": lambda: step(lambda: packed_logits(g.network, g_enc), opt_g),
        "transformer": lambda: step(lambda: t(t_enc, Needs()).logits, opt_t),
    }
    g1, t1 = g.encode([single], args.max_length), t.encode([single], args.max_length)
    te1 = t1  # same shape of input for the teacher (a BPE of similar granularity)

    def no_grad(fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with torch.no_grad():
                return fn()

        return run

    latency = {
        "gru": no_grad(lambda: g(g1, Needs()).logits),
        "gru-packed": no_grad(lambda: packed_logits(g.network, g1)),
        "transformer": no_grad(lambda: t(t1, Needs()).logits),
        "teacher": no_grad(
            lambda: teacher(input_ids=te1.input_ids, attention_mask=te1.attention_mask)
        ),
    }
    step_s: dict[str, list[float]] = {k: [] for k in steps}
    lat_s: dict[str, list[float]] = {k: [] for k in latency}
    for _ in range(args.repeats):
        g.train(), t.train()
        for k, fn in steps.items():
            step_s[k].append(timed(fn, args.steps))
        g.eval(), t.eval()
        for k, fn in latency.items():
            lat_s[k].append(timed(fn, 5 * args.steps))

    def ratio(d: dict[str, list[float]], a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(d[a], d[b], strict=True))

    row = {
        "parameters": {"gru": g.info.num_parameters, "transformer": t.info.num_parameters},
        "batch_tokens": {
            "gru": int(g_enc.attention_mask.sum()),
            "longest": int(g_enc.input_ids.shape[1]),
        },
        "step_ms": {k: 1000 * statistics.median(v) for k, v in step_s.items()},
        "latency_ms": {k: 1000 * statistics.median(v) for k, v in lat_s.items()},
        "gru_step_over_transformer": ratio(step_s, "gru", "transformer"),
        "packed_step_over_transformer": ratio(step_s, "gru-packed", "transformer"),
        "gru_latency_over_teacher": ratio(lat_s, "gru", "teacher"),
        "packed_latency_over_teacher": ratio(lat_s, "gru-packed", "teacher"),
        "transformer_latency_over_teacher": ratio(lat_s, "transformer", "teacher"),
    }
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", nargs="+", default=["0.06M", "0.25M"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--out", default=str(Path(__file__).with_name("results-students.json")))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    task = TinyTask()
    splits = task.load()
    ctx = BuildContext(task=task, splits=splits, cache_dir="/tmp/kdkit-bench-students")
    texts = [str(t) for t in splits["train"]["text"]]
    batch = (texts * 32)[:32]
    single = max(texts, key=len)  # the longest row: a recurrence's worst case
    from transformers import RobertaConfig, RobertaForSequenceClassification

    teacher = RobertaForSequenceClassification(
        RobertaConfig(
            vocab_size=4000,
            hidden_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=512,
            max_position_embeddings=args.max_length + 2,
            num_labels=len(task.labels),
            pad_token_id=1,
        )
    ).eval()
    results: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "threads": args.threads},
        "batch": len(batch),
        "max_length": args.max_length,
        "sizes": {},
    }
    for size in args.sizes:
        row = measure_size(size, ctx, batch, single, teacher, args)
        results["sizes"][size] = row
        print(size, json.dumps(row), flush=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
