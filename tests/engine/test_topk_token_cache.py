"""Top-k logits and token states in one cache entry (``cache.logits: topk`` with a method, like
CKD, that needs the teacher's token states): what is stored, what a run reads back, exactness for
k = C and the sparse KD term for k < C."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from kdkit.api import BuildContext
from kdkit.engine.batching import Encoder, make_split
from kdkit.engine.teacher_cache import CacheSlot, TeacherPass, load_or_build
from kdkit.engine.topk_cache import LogitsFormat, TopKCachedTeacher
from kdkit.kernels import sparse_kd_loss
from kdkit.plugins.methods.ckd import CKD, CKDOptions
from kdkit.testing.tiny import LABELS, TinyStudent, TinyTeacher

CPU = torch.device("cpu")
C = len(LABELS)  # the tiny task's classes


def _setup(tiny_splits, tmp_path, logits: LogitsFormat, fmt: str = "fp32"):
    task, splits = tiny_splits
    teacher, student = TinyTeacher(), TinyStudent()
    context = BuildContext(
        task=task, student=student.info, teacher=teacher.info, kernel_impl="reference"
    )
    method = CKD(CKDOptions(alpha=0.5, temperature=2.0), context)
    needs = method.requirements.teacher
    train = make_split(
        "train", splits["train"], False, 64, Encoder(student.encode), Encoder(teacher.encode)
    )
    job = TeacherPass(teacher, needs, train.teacher, CPU, 7, progress=False)
    slot = CacheSlot("train", task.fingerprint(), 64, tmp_path, token_states=fmt, logits=logits)
    return teacher, student, method, train, load_or_build(job, slot)


def test_topk_entry_with_token_states_stores_topk_tensors_and_sizes(tiny_splits, tmp_path):
    *_, cached = _setup(tiny_splits, tmp_path, LogitsFormat("topk", 2, 1.0))
    assert isinstance(cached, TopKCachedTeacher) and cached.tokens is not None
    meta = json.loads((cached.directory / "meta.json").read_text())
    assert meta["logits_format"] == {"format": "topk", "k": 2, "temperature": 1.0}
    assert meta["num_classes"] == C and meta["k_stored"] == 2
    # per example: 2 float32 log-probs + 2 int32 indices + the float32 tail, vs C float32 logits
    assert meta["bytes_per_example"] == 2 * 4 + 2 * 4 + 4
    assert meta["full_logits_bytes_per_example"] == 4 * C
    assert meta["token_states"]["format"] == "fp32"
    shard = load_file(str(cached.directory / meta["shards"][0]))
    assert "logits" not in shard
    assert shard["topk_indices"].shape[1] == 2 and shard["topk_indices"].dtype == torch.int32
    assert any(k.startswith("hidden.") for k in shard)


def test_ckd_from_a_topk_token_entry_with_k_equal_c_equals_the_full_entry(tiny_splits, tmp_path):
    """k = C: the same KD term (sparse KD is exact), the same word and layer relations (the
    token states are the same), the same attention mask and offsets as a full-logit entry."""
    teacher, student, method, train, full = _setup(tiny_splits, tmp_path / "a", LogitsFormat())
    *_, top = _setup(tiny_splits, tmp_path / "b", LogitsFormat("topk", C, 1.0))
    assert isinstance(top, TopKCachedTeacher) and full.directory != top.directory
    for rows in ([3, 17, 8, 29, 0, 11], list(range(32))):
        batch = train.batch(rows)
        batch.teacher = None  # what the engine hands a method with a cached teacher
        a, b = full(batch), top(batch)
        for layer in a.hidden_states:
            assert torch.equal(a.hidden_states[layer], b.hidden_states[layer])
        assert torch.equal(a.attention_mask, b.attention_mask)
        assert torch.equal(a.offsets, b.offsets)
        s = student(batch.student, method.requirements.student)  # one forward: same dropout
        want, got = method(s, a, batch), method(s, b, batch)
        assert sorted(got) == sorted(want) == ["ce", "kd", "ltr", "wr"]
        for name in ("wr", "ltr", "ce"):
            assert torch.equal(got[name], want[name]), name
        # KD at T = 2 from values stored at T0 = 1: exact for k = C up to fp32 rounding
        torch.testing.assert_close(got["kd"], want["kd"], rtol=1e-5, atol=1e-7)
        assert float(want["wr"].detach()) > 0


def test_ckd_from_a_topk_token_entry_below_c_uses_the_sparse_kd_term(tiny_splits, tmp_path):
    teacher, student, method, train, full = _setup(tiny_splits, tmp_path / "a", LogitsFormat())
    *_, top = _setup(tiny_splits, tmp_path / "b", LogitsFormat("topk", 1, 1.0))
    batch = train.batch(list(range(32)))
    batch.teacher = None
    out = top(batch)
    s = student(batch.student, method.requirements.student)
    got = method(s, out, batch)
    want = method(s, full(batch), batch)
    for name in ("wr", "ltr"):  # the relations do not depend on how the logits are stored
        assert torch.equal(got[name], want[name]), name
    o = method.options  # kd term = alpha T^2 KL over the cached top-1 + tail buckets
    sparse = o.alpha * sparse_kd_loss(  # (T^2 included)
        s.logits, out.topk, o.temperature, impl="reference"
    )
    torch.testing.assert_close(got["kd"], sparse, rtol=1e-6, atol=1e-8)
    assert not torch.allclose(got["kd"], want["kd"])  # k = 1 < C really is an approximation
