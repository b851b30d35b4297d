"""The token-state teacher cache: round trip, formats and their error bounds, keys, damage, CKD
trained from the cache exactly as from the live teacher."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from kdkit.api import BuildContext, Needs, Progress
from kdkit.cli import main
from kdkit.engine.batching import Encoder, make_split
from kdkit.engine.teacher_cache import CacheSlot, TeacherPass, cache_key, cacheable, load_or_build
from kdkit.engine.token_cache import (
    bytes_per_token,
    dequantise_int8,
    int8_error_bound,
    quantise_int8,
)
from kdkit.errors import KdkitError
from kdkit.plugins.methods.ckd import CKD, CKDOptions
from kdkit.testing.tiny import TinyStudent, TinyTeacher

CPU = torch.device("cpu")
NEEDS = Needs(logits=True, hidden_layers=(1, 3), pooled_layers=(2,), embedding=True)


class CountingTeacher(TinyTeacher):
    """A tiny teacher that counts the rows it is run on."""

    rows = 0

    def __call__(self, encoded, needs):
        CountingTeacher.rows += encoded.input_ids.shape[0]
        return super().__call__(encoded, needs)


def _split(tiny_splits, teacher, student=None):
    task, splits = tiny_splits
    student_enc = Encoder(student.encode) if student is not None else Encoder(teacher.encode)
    return make_split("train", splits["train"], False, 64, student_enc, Encoder(teacher.encode))


def _entry(tiny_splits, tmp_path, teacher, fmt, needs=NEEDS, batch_size=5, student=None):
    task, _ = tiny_splits
    train = _split(tiny_splits, teacher, student)
    job = TeacherPass(teacher, needs, train.teacher, CPU, batch_size, progress=False)
    slot = CacheSlot("train", task.fingerprint(), 64, tmp_path, token_states=fmt)
    return train, job, slot, load_or_build(job, slot)


def test_fp32_round_trip_is_exact_and_padded_like_a_live_batch(tiny_splits, tmp_path):
    teacher = CountingTeacher()
    CountingTeacher.rows = 0
    train, job, slot, first = _entry(tiny_splits, tmp_path, teacher, "fp32")
    assert CountingTeacher.rows == len(train) == 32  # one pass, every row once
    again = load_or_build(job, slot)
    assert CountingTeacher.rows == 32  # read from the shards
    for rows in ([5, 1, 30], [0], list(range(32))):
        batch = train.batch(rows)
        live = teacher(batch.teacher, NEEDS)
        mask = batch.teacher.attention_mask
        for cached in (first(batch), again(batch)):
            assert torch.equal(cached.attention_mask, mask)
            assert torch.equal(cached.offsets, batch.teacher.offsets)
            assert sorted(cached.hidden_states) == [1, 3]
            for layer in (1, 3):
                got, want = cached.hidden_states[layer], live.hidden_states[layer]
                assert got.shape == want.shape  # [B, longest row of the batch, H]
                real = mask.bool()
                torch.testing.assert_close(got[real], want[real], rtol=0, atol=1e-6)
                assert bool((got[~real] == 0).all())  # padding: zeros
            torch.testing.assert_close(cached.logits, live.logits, rtol=0, atol=1e-6)
            torch.testing.assert_close(cached.pooled[2], live.pooled[2], rtol=0, atol=1e-6)
            torch.testing.assert_close(cached.embedding, live.embedding, rtol=0, atol=1e-6)


@pytest.mark.parametrize("fmt, rel", [("bf16", 2.0**-8), ("fp16", 2.0**-11)])
def test_half_formats_round_to_their_precision(tiny_splits, tmp_path, fmt, rel):
    teacher = TinyTeacher()
    train, _, _, cached = _entry(tiny_splits, tmp_path, teacher, fmt)
    batch = train.batch(list(range(32)))
    live = teacher(batch.teacher, NEEDS)
    real = batch.teacher.attention_mask.bool()
    for layer in (1, 3):
        want = live.hidden_states[layer][real]
        got = cached(batch).hidden_states[layer][real]
        # round to nearest: |error| <= half an ulp <= |x| * 2^-(stored mantissa bits + 1), the
        # unit roundoff (bf16: 7 bits, fp16: 10); plus fp16's subnormal step for tiny values
        assert bool(((got - want).abs() <= want.abs() * rel + 2.0**-25).all())
        assert not torch.equal(got, want)  # really stored at the lower precision


def test_int8_error_is_within_half_a_step_per_token():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 48, generator=g) * torch.logspace(-3, 3, 300).unsqueeze(1)
    x[7] = 0.0  # an all-zero token decodes to zeros
    q, scale = quantise_int8(x)
    assert q.dtype == torch.int8 and scale.shape == (300,)
    err = (dequantise_int8(q, scale) - x).abs().amax(dim=1)  # [T]
    bound = int8_error_bound(x)  # max|x| / 254 per token
    assert bool((err <= bound * (1 + 1e-5)).all())
    assert float(err[7]) == 0.0
    assert float((err / bound.clamp_min(1e-30)).max()) > 0.9  # the bound is tight, not loose


def test_int8_entry_reads_back_within_the_bound(tiny_splits, tmp_path):
    teacher = TinyTeacher()
    train, _, _, cached = _entry(tiny_splits, tmp_path, teacher, "int8")
    batch = train.batch(list(range(32)))
    live = teacher(batch.teacher, NEEDS)
    real = batch.teacher.attention_mask.bool()
    for layer in (1, 3):
        want = live.hidden_states[layer][real]  # [T, H]
        err = (cached(batch).hidden_states[layer][real] - want).abs().amax(dim=1)
        assert bool((err <= int8_error_bound(want) * (1 + 1e-5)).all())


def test_meta_reports_the_size_per_token_and_the_ragged_saving(tiny_splits, tmp_path, capsys):
    teacher = TinyTeacher()
    train, _, _, cached = _entry(tiny_splits, tmp_path, teacher, "bf16")
    meta = json.loads((cached.directory / "meta.json").read_text())
    ts = meta["token_states"]
    tokens = sum(int(ids.numel()) for ids in train.teacher.input_ids)
    # 2 layers x 24 dims x 2 bytes + one int32 span pair
    assert ts["bytes_per_token"] == 2 * 24 * 2 + 8 == bytes_per_token("bf16", [24, 24])
    assert ts["tokens"] == tokens and ts["layers"] == [1, 3] and ts["format"] == "bf16"
    assert ts["bytes_per_example"] == pytest.approx(104 * tokens / 32)
    assert ts["padded_bytes_per_example"] == 104 * 64
    shard = load_file(str(cached.directory / meta["shards"][0]))
    assert shard["hidden.1"].dtype == torch.bfloat16 and shard["hidden.1"].shape[0] == tokens
    assert main(["cache", "--dir", str(tmp_path), "ls", "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)["entries"]
    assert entry["bytes_per_token"] == 104 and entry["token_states"] == "bf16"
    assert main(["cache", "--dir", str(tmp_path), "ls"]) == 0
    assert "104 B/token (bf16)" in capsys.readouterr().out


def test_the_format_and_layers_are_part_of_the_key(tiny_splits, tmp_path):
    teacher = TinyTeacher()
    keys = {
        _entry(tiny_splits, tmp_path, teacher, fmt, needs)[3].directory.name
        for fmt in ("bf16", "int8")
        for needs in (NEEDS, Needs(hidden_layers=(2,)))
    }
    logits_only = _entry(tiny_splits, tmp_path, teacher, "int8", Needs())[3].directory.name
    assert len(keys | {logits_only}) == 5
    # an entry without token states keeps the key it always had (the format is not in it)
    task_fp = tiny_splits[0].fingerprint()
    assert logits_only == cache_key(teacher.fingerprint(), task_fp, "train", Needs(), 64)


def test_an_explicit_cache_of_another_format_is_refused(tiny_splits, tmp_path):
    task, _ = tiny_splits
    teacher = TinyTeacher()
    train = _split(tiny_splits, teacher)
    job = TeacherPass(teacher, NEEDS, train.teacher, CPU, 8, progress=False)
    mine = str(tmp_path / "mine")
    load_or_build(job, CacheSlot("train", task.fingerprint(), 64, tmp_path, mine, "bf16"))
    with pytest.raises(KdkitError) as err:
        load_or_build(job, CacheSlot("train", task.fingerprint(), 64, tmp_path, mine, "int8"))
    assert "'bf16'" in err.value.what and "'int8'" in err.value.what
    assert "cache.token_states" in err.value.fix


def test_a_corrupt_token_shard_names_the_file_and_the_fix(tiny_splits, tmp_path, capsys):
    teacher = TinyTeacher()
    _, job, slot, cached = _entry(tiny_splits, tmp_path, teacher, "bf16")
    shard = cached.directory / "tokens-00000.safetensors"
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF  # one flipped byte in a state
    shard.write_bytes(bytes(data))
    with pytest.raises(KdkitError) as err:
        load_or_build(job, slot)
    assert "tokens-00000.safetensors" in err.value.what
    assert str(shard) == err.value.where
    assert f"kdkit cache clear {cached.directory.name}" in err.value.fix
    assert main(["cache", "--dir", str(tmp_path), "verify"]) == 2
    assert "tokens-00000.safetensors" in capsys.readouterr().out


def test_cacheable_unless_token_states_are_off():
    assert cacheable(Needs()) and cacheable(Needs(), "off")
    assert cacheable(Needs(hidden_layers=(1,))) and cacheable(Needs(hidden_layers=(1,)), "int8")
    assert not cacheable(Needs(hidden_layers=(1,)), "off")


def _ckd_losses(tiny_splits, tmp_path, fmt):
    teacher, student = TinyTeacher(), TinyStudent()
    context = BuildContext(
        task=tiny_splits[0], student=student.info, teacher=teacher.info, kernel_impl="reference"
    )
    method = CKD(CKDOptions(alpha=0.5), context)
    needs = method.requirements.teacher
    train, _, _, cached = _entry(tiny_splits, tmp_path, teacher, fmt, needs, 7, student)
    out = []
    for rows in ([3, 17, 8, 29, 0, 11], list(range(32))):
        batch = train.batch(rows)
        s = student(batch.student, method.requirements.student)
        live = method(s, teacher(batch.teacher, needs), batch)
        cached_batch = train.batch(rows)
        cached_batch.teacher = None  # what the engine hands a method with a cached teacher
        from_cache = method(s, cached(cached_batch), cached_batch)
        assert sorted(live) == sorted(from_cache) == ["ce", "kd", "ltr", "wr"]
        out.append((live, from_cache))
    return out


def test_ckd_loss_from_an_fp32_cache_equals_the_live_teacher(tiny_splits, tmp_path):
    for live, cached in _ckd_losses(tiny_splits, tmp_path, "fp32"):
        for name in live:
            assert torch.equal(cached[name], live[name]), name


def test_ckd_loss_from_a_bf16_cache_is_within_bf16_rounding(tiny_splits, tmp_path):
    for live, cached in _ckd_losses(tiny_splits, tmp_path, "bf16"):
        for name in ("wr", "ltr"):
            assert float(live[name].detach()) > 0
            torch.testing.assert_close(cached[name], live[name], rtol=2.0**-6, atol=0)
        torch.testing.assert_close(cached["kd"], live["kd"], rtol=1e-6, atol=0)  # logits fp32


def test_states_are_decoded_when_first_read_and_equal_an_eager_read(tiny_splits, tmp_path):
    """A cached batch's states decode layer by layer on first read (then stay): what a method
    never reads costs nothing, and what it reads equals the full decode."""
    teacher = CountingTeacher()
    train, _, _, cached = _entry(tiny_splits, tmp_path, teacher, "fp32")
    out = cached(train.batch([4, 9, 2]))
    states = out.hidden_states
    assert sorted(states) == [1, 3] and len(states) == 2 and 2 not in states
    assert states._decoded == {}
    first = states[3]
    assert list(states._decoded) == [3] and states[3] is first
    live = teacher(train.batch([4, 9, 2]).teacher, NEEDS).hidden_states[3]
    real = out.attention_mask.bool()
    torch.testing.assert_close(first[real], live[real], rtol=0, atol=1e-6)
    with pytest.raises(KeyError):
        states[2]


def test_ckd_reads_no_teacher_states_once_its_relations_are_kept(tiny_splits, tmp_path):
    """In training, CKD's second sight of the same rows comes from its kept teacher relations:
    the cache decodes no token state for it, and the loss is the first sight's."""
    teacher, student = TinyTeacher(), TinyStudent()
    context = BuildContext(
        task=tiny_splits[0], student=student.info, teacher=teacher.info, kernel_impl="reference"
    )
    method = CKD(CKDOptions(alpha=0.5), context)
    needs = method.requirements.teacher
    train, _, _, cached = _entry(tiny_splits, tmp_path, teacher, "fp32", needs, 7, student)
    losses = []
    for _ in range(2):
        batch = train.batch([3, 17, 8])
        batch.teacher = None
        batch.progress = Progress(step=1, total_steps=2, epoch=0)
        t_out = cached(batch)
        with torch.no_grad():
            s = student.eval()(batch.student, method.requirements.student)
        losses.append(method(s, t_out, batch))
        decoded = list(t_out.hidden_states._decoded)
    assert decoded == []  # the second batch read no states
    for name in ("wr", "ltr"):
        assert torch.equal(losses[0][name], losses[1][name])
