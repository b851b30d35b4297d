"""The default job's inference timing (torch.utils.benchmark) measures the forward pass."""

from __future__ import annotations

import time
from types import SimpleNamespace

import torch

from kdkit.engine.default_job import measure_inference


class SleepyModel:
    """A 'model' whose forward takes 20 ms per call plus 1 ms per row, and counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, examples, max_length):
        batch = SimpleNamespace(rows=len(examples))
        batch.to = lambda device: batch
        return batch

    def __call__(self, encoded, needs):
        self.calls += 1
        time.sleep(0.020 + 0.001 * encoded.rows)
        return SimpleNamespace(logits=torch.zeros(encoded.rows, 2))


def test_latency_and_throughput_come_from_the_timed_forward():
    model = SleepyModel()
    got = measure_inference(model, [f"x{i}" for i in range(10)], 16, latency_rows=4, batch_size=5)
    # batch 1: 21 ms a call (sleep is a lower bound; a loaded machine only adds)
    assert 21.0 <= got["latency_ms"] < 60.0
    # 10 rows in 2 batches of 5: 2 x 25 ms = 50 ms -> at most 200 rows/s
    assert got["throughput"] <= 10 / 0.050 + 1e-6
    assert got["throughput"] > 10 / 0.200
    # each timing is one timed call after the Timer's 2 warm-up calls: 4 rows + 1 pass of 2
    assert model.calls == 4 * 3 + 3 * 2


def test_latency_uses_the_threads_torch_is_set_to():
    before = torch.get_num_threads()
    seen = []

    class Probe(SleepyModel):
        def __call__(self, encoded, needs):
            seen.append(torch.get_num_threads())
            return SimpleNamespace(logits=torch.zeros(encoded.rows, 2))

    measure_inference(Probe(), ["a", "b"], 16, latency_rows=1, batch_size=2)
    assert set(seen) == {before}  # benchmark.Timer's default would be one thread
    assert torch.get_num_threads() == before


def test_no_grad_holds_inside_the_timer():
    class GradProbe(SleepyModel):
        def __call__(self, encoded, needs):
            assert not torch.is_grad_enabled()
            return SimpleNamespace(logits=torch.zeros(encoded.rows, 2))

    measure_inference(GradProbe(), ["a"], 16, latency_rows=1, batch_size=1)


def test_throughput_reads_at_most_throughput_rows_spread_over_the_lengths():
    seen: list[int] = []

    class Recorder(SleepyModel):
        def encode(self, examples, max_length):
            seen.extend(len(e) for e in examples)
            return super().encode(examples, max_length)

    examples = ["x" * n for n in range(1, 101)]  # lengths 1..100
    measure_inference(Recorder(), examples, 16, latency_rows=1, batch_size=5, throughput_rows=10)
    batched = seen[1:]  # after the one latency row
    assert len(batched) == 10 and batched[0] == 1 and batched[-1] == 100  # both ends kept
    assert batched == sorted(batched) and len(set(batched)) == 10
