"""CKD: alignment of two real tokenisations by character offsets, padding masked, invariants."""

from __future__ import annotations

import inspect
import re
import textwrap

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kdkit.api import Batch, Encoded, ModelOutput, Progress
from kdkit.errors import KdkitError
from kdkit.kernels import ckd_loss
from kdkit.plugins.methods.ckd import CKD, CKDOptions
from kdkit.testing import TinyStudent, TinyTeacher, tiny_batch

from .helpers import context, info

WORD = r"\w+|[^\w\s]"


def _encode(texts: list[str], pattern: str, pad_to: int | None = None) -> Encoded:
    """Regex tokenisation with <s>/</s> specials and right padding (garbage pad offsets)."""
    rows = [[(0, 0), *(m.span() for m in re.finditer(pattern, t)), (0, 0)] for t in texts]
    length = pad_to or max(len(r) for r in rows)
    offsets = torch.full((len(rows), length, 2), 7777, dtype=torch.long)
    mask = torch.zeros(len(rows), length, dtype=torch.long)
    for i, r in enumerate(rows):
        offsets[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return Encoded(torch.zeros_like(mask), mask, offsets)


def _texts() -> list[str]:
    return [textwrap.dedent(inspect.getsource(textwrap.indent)), "def f(x):\n    return x + 1\n"]


def _word_states(enc: Encoded, texts, per_word: dict[str, torch.Tensor], width: int):
    """Token states that depend only on the word a token lies in (random for specials/padding)."""
    g = torch.Generator().manual_seed(3)
    b, length = enc.attention_mask.shape
    out = torch.randn(b, length, width, generator=g, dtype=torch.float64) * 50
    for i, text in enumerate(texts):
        words = [(m.start(), m.end()) for m in re.finditer(WORD, text)]
        for j in range(length):
            s, e = enc.offsets[i, j].tolist()
            if enc.attention_mask[i, j] and e > s:
                w = next(k for k, (ws, we) in enumerate(words) if ws <= s and e <= we)
                out[i, j] = per_word[(i, w)]
    return out


def _ckd(layers: int = 2) -> CKD:
    return CKD(CKDOptions(alpha=0.5, window=3), context(info(layers, 4), info(layers, 4)))


def test_char_student_word_teacher_identical_span_states_give_zero_relations():
    texts = _texts()
    s_enc, t_enc = _encode(texts, r"\S", pad_to=None), _encode(texts, WORD)
    g = torch.Generator().manual_seed(0)
    per_word = {
        (i, w): torch.randn(2, 4, generator=g, dtype=torch.float64)
        for i, t in enumerate(texts)
        for w in range(len(re.findall(WORD, t)))
    }
    states = {}
    for side, enc in (("s", s_enc), ("t", t_enc)):
        for layer in (1, 2):
            layer_words = {k: v[layer - 1] for k, v in per_word.items()}
            scale = 3.0 if side == "s" else 1.0  # relations ignore the scale of hidden states
            states[side, layer] = scale * _word_states(enc, texts, layer_words, 4)
    # positions differ completely (chars vs words), so a positional comparison could not be 0
    assert s_enc.attention_mask.shape[1] > 3 * t_enc.attention_mask.shape[1]
    m = _ckd()
    s = ModelOutput(
        torch.zeros(2, 3),
        {1: states["s", 1], 2: states["s", 2]},
        attention_mask=s_enc.attention_mask,
        offsets=s_enc.offsets,
    )
    t = ModelOutput(
        torch.zeros(2, 3),
        {1: states["t", 1], 2: states["t", 2]},
        attention_mask=t_enc.attention_mask,
        offsets=t_enc.offsets,
    )
    b = Batch(texts, torch.tensor([0, 1]), torch.arange(2), s_enc, t_enc)
    terms = m(s, t, b)
    assert terms["wr"].item() == pytest.approx(0.0, abs=1e-10)
    assert terms["ltr"].item() == pytest.approx(0.0, abs=1e-10)
    # moving one word's student state makes both relations positive
    s.hidden_states[2] = s.hidden_states[2].clone()
    s.hidden_states[2][1, 1:4] += 5.0  # the characters of "def" in row 1
    moved = m(s, t, b)
    assert moved["wr"].item() > 1e-3 and moved["ltr"].item() > 1e-3


def _reference_pool(hidden, enc: Encoded, texts, spans_per_row):
    """Mean of token states inside each span, by Python loops (independent of kdkit.features)."""
    b = len(texts)
    t = max(len(s) for s in spans_per_row)
    out = torch.zeros(b, t, hidden.shape[-1], dtype=hidden.dtype)
    for i, spans in enumerate(spans_per_row):
        for k, (lo, hi) in enumerate(spans):
            rows = [
                j
                for j in range(hidden.shape[1])
                if enc.attention_mask[i, j]
                and enc.offsets[i, j, 1] > enc.offsets[i, j, 0]
                and lo <= enc.offsets[i, j, 0]
                and enc.offsets[i, j, 1] <= hi
            ]
            out[i, k] = hidden[i, rows].mean(0)
    return out


def test_tiny_models_words_vs_pieces_match_a_loop_reference():
    torch.manual_seed(0)
    teacher, student = TinyTeacher(), TinyStudent()
    b = tiny_batch(4, teacher=teacher, student=student, max_length=48)
    m = CKD(CKDOptions(window=4), context(student.info, teacher.info))
    s_out = student(b.student, m.requirements.student)
    t_out = teacher(b.teacher, m.requirements.teacher)
    terms = m(s_out, t_out, b)
    # expected spans: the words both tokenisations reached (pieces run out of room first)
    spans = []
    for i, text in enumerate(b.texts):
        s_end = int(b.student.offsets[i, :, 1].max())
        t_end = int(b.teacher.offsets[i, :, 1].max())
        spans.append([w.span() for w in re.finditer(WORD, text) if w.end() <= min(s_end, t_end)])
    assert any(len(s) < len(re.findall(WORD, t)) for s, t in zip(spans, b.texts))  # truncation
    mask = torch.zeros(len(spans), max(map(len, spans)), dtype=torch.bool)
    for i, s in enumerate(spans):
        mask[i, : len(s)] = True
    hs = torch.stack(
        [
            _reference_pool(s_out.hidden_states[layer], b.student, b.texts, spans)
            for layer in m.student_layers
        ],
        1,
    )
    ht = torch.stack(
        [
            _reference_pool(t_out.hidden_states[layer], b.teacher, b.texts, spans)
            for layer in m.teacher_layers
        ],
        1,
    )
    ref = ckd_loss(hs, ht, mask, window=4)
    assert terms["wr"].item() == pytest.approx(10 * ref.word_relation.item(), rel=1e-5)
    assert terms["ltr"].item() == pytest.approx(100 * ref.layer_relation.item(), rel=1e-5)


def test_real_bpe_student_against_word_teacher_with_padding():
    from tokenizers import ByteLevelBPETokenizer

    texts = _texts()
    corpus = [inspect.getsource(textwrap)]
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(corpus, vocab_size=400, min_frequency=2, show_progress=False)
    encs = tok.encode_batch(texts)
    length = max(len(e.ids) for e in encs) + 5  # extra padding columns
    offsets = torch.full((2, length, 2), 123, dtype=torch.long)
    mask = torch.zeros(2, length, dtype=torch.long)
    for i, e in enumerate(encs):
        offsets[i, : len(e.ids)] = torch.tensor(e.offsets)
        mask[i, : len(e.ids)] = 1
    s_enc, t_enc = Encoded(torch.zeros_like(mask), mask, offsets), _encode(texts, WORD)
    m = _ckd()
    g = torch.Generator().manual_seed(1)
    hs = {k: torch.randn(2, length, 4, generator=g, requires_grad=True) for k in (1, 2)}
    ht = {k: torch.randn(2, t_enc.offsets.shape[1], 6, generator=g) for k in (1, 2)}
    b = Batch(texts, torch.tensor([0, 1]), torch.arange(2), s_enc, t_enc)
    s_out = ModelOutput(torch.zeros(2, 3, requires_grad=True), hs)  # offsets come from the batch
    t_out = ModelOutput(torch.zeros(2, 3), ht)
    terms = m(s_out, t_out, b)
    assert all(torch.isfinite(v) for v in terms.values()) and terms["wr"].item() > 0
    (terms["wr"] + terms["ltr"]).backward()
    # padding columns of the student get no gradient: they are masked, not compared
    for k in (1, 2):
        assert torch.count_nonzero(hs[k].grad[:, len(encs[0].ids) :]) == 0
        assert torch.count_nonzero(hs[k].grad[1, len(encs[1].ids) :]) == 0
        assert torch.count_nonzero(hs[k].grad[0, 1 : len(encs[0].ids)]) > 0


def test_missing_offsets_is_a_clear_error():
    m = _ckd()
    out = ModelOutput(torch.zeros(1, 3), {1: torch.zeros(1, 2, 4), 2: torch.zeros(1, 2, 4)})
    dummy = Encoded(
        torch.zeros(1, 2, dtype=torch.long),
        torch.ones(1, 2, dtype=torch.long),
        torch.zeros(1, 2, 2, dtype=torch.long),
    )
    with pytest.raises(KdkitError, match="offsets") as info_:
        m(out, out, Batch(["ab"], torch.tensor([0]), torch.arange(1), dummy, None))
    assert info_.value.fix


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.05, 20.0), st.integers(0, 5))
def test_ckd_invariant_to_student_scale_and_width(seed, scale, extra):
    texts = _texts()[1:]
    s_enc, t_enc = _encode(texts, r"\w{1,2}|[^\w\s]"), _encode(texts, WORD)
    g = torch.Generator().manual_seed(seed)
    hs = {
        k: torch.randn(1, s_enc.offsets.shape[1], 4, generator=g, dtype=torch.float64)
        for k in (1, 2)
    }
    ht = {
        k: torch.randn(1, t_enc.offsets.shape[1], 5, generator=g, dtype=torch.float64)
        for k in (1, 2)
    }
    q, _ = torch.linalg.qr(torch.randn(4 + extra, 4 + extra, generator=g, dtype=torch.float64))
    widen = lambda x: torch.cat([x, x.new_zeros(*x.shape[:-1], extra)], -1) @ q  # noqa: E731
    b = Batch(texts, torch.tensor([0]), torch.arange(1), s_enc, t_enc)
    m = _ckd()
    t_out = ModelOutput(torch.zeros(1, 3), ht)
    base = m(ModelOutput(torch.zeros(1, 3), hs), t_out, b)
    scaled = m(ModelOutput(torch.zeros(1, 3), {k: v * scale for k, v in hs.items()}), t_out, b)
    wide = m(ModelOutput(torch.zeros(1, 3), {k: widen(v) for k, v in hs.items()}), t_out, b)
    for name in ("wr", "ltr"):
        assert base[name].item() >= 0
        assert scaled[name].item() == pytest.approx(base[name].item(), rel=1e-5, abs=1e-8)
        assert wide[name].item() == pytest.approx(base[name].item(), rel=1e-5, abs=1e-8)


def _memo_case(order=(0, 1)):
    """A training batch (progress set) of the two texts in ``order``; each text's token states
    depend on the text only (as a frozen teacher's do), padded to the batch's longest row."""
    texts = [_texts()[i] for i in order]
    s_enc, t_enc = _encode(texts, r"\w{1,3}|[^\w\s]"), _encode(texts, WORD)

    def states(enc: Encoded, width: int, salt: int) -> dict[int, torch.Tensor]:
        out = {}
        for layer in (1, 2):
            rows = [
                torch.randn(
                    enc.offsets.shape[1],
                    width,
                    generator=torch.Generator().manual_seed(100 * i + 10 * layer + salt),
                )
                for i in order
            ]
            out[layer] = torch.stack(rows)
        return out

    batch = Batch(texts, torch.tensor([0, 1]), torch.tensor(order), s_enc, t_enc)
    batch.progress = Progress(step=1, total_steps=10, epoch=0)
    return (
        ModelOutput(torch.zeros(2, 3), states(s_enc, 4, 1)),
        ModelOutput(torch.zeros(2, 3), states(t_enc, 6, 2)),
        batch,
    )


def _ckd_with(**options) -> CKD:
    return CKD(CKDOptions(window=3, **options), context(info(2, 4), info(2, 6)))


def test_kept_teacher_relations_give_the_recomputed_loss_in_any_batch_order(monkeypatch):
    """Training batches keep each example's teacher relations; a later batch of the same rows,
    in another order, is served from them (no teacher relations computed) with the loss that
    recomputing gives, bit for bit."""
    import kdkit.plugins.methods.ckd as ckd_module

    calls = []
    real = ckd_module.teacher_relations
    monkeypatch.setattr(
        ckd_module, "teacher_relations", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    m = _ckd_with()
    first = m(*_memo_case((0, 1)))
    assert len(calls) == 1 and set(m.memo.rows) == {("train", 0), ("train", 1)}
    again = m(*_memo_case((1, 0)))
    assert len(calls) == 1  # served from the kept relations
    fresh = _ckd_with()(*_memo_case((1, 0)))
    assert len(calls) == 2
    for name in ("wr", "ltr"):
        assert torch.equal(again[name], fresh[name])
        assert again[name].item() == pytest.approx(first[name].item(), rel=1e-5)


def test_fp32_relations_are_exact_and_fp16_within_rounding():
    """``fp32`` keeps exactly what ``off`` recomputes; ``fp16`` rounds the teacher's relations
    (|values| <= 2, so by at most 2^-10 each) and moves the loss by far less than 1 %."""
    off = _ckd_with(teacher_relations="off")
    assert off.memo.budget == 0
    want = off(*_memo_case())
    fp32 = _ckd_with(teacher_relations="fp32")
    fp32(*_memo_case())
    kept = fp32(*_memo_case())
    fp16 = _ckd_with()(*_memo_case())
    for name in ("wr", "ltr"):
        assert torch.equal(kept[name], want[name])
        assert fp16[name].item() == pytest.approx(want[name].item(), rel=1e-3)
        assert fp16[name].item() != want[name].item()


def test_relations_past_the_memory_budget_are_recomputed():
    """A budget too small for an example keeps nothing, and the loss is the same."""
    tiny = _ckd_with(teacher_memory_mb=1e-6)
    out = tiny(*_memo_case())
    assert tiny.memo.rows == {} and tiny.memo.used == 0
    assert torch.equal(out["wr"], _ckd_with()(*_memo_case())["wr"])
    one = _ckd_with()
    one.memo.budget = one.memo.used + 1  # nothing fits
    one(*_memo_case())
    assert one.memo.rows == {}


def test_outside_training_nothing_is_kept():
    """Evaluation and unit calls (no ``batch.progress``) never keep relations."""
    m = _ckd_with()
    s, t, batch = _memo_case()
    batch.progress = None
    m(s, t, batch)
    assert m.memo.rows == {}


def test_a_kept_example_whose_spans_changed_is_recomputed():
    """The same row number with another text (another span count) is not served stale."""
    m = _ckd_with()
    m(*_memo_case((0, 1)))
    s, t, batch = _memo_case((1, 0))
    batch.index = torch.tensor([0, 1])  # row 0 now holds the other text
    out = m(s, t, batch)
    s2, t2, b2 = _memo_case((1, 0))
    b2.index = torch.tensor([0, 1])
    assert torch.equal(out["wr"], _ckd_with()(s2, t2, b2)["wr"])
