"""kdkit.features: layer mapping, cross-tokenizer span alignment, pooling."""

from __future__ import annotations

import inspect
import re
import textwrap

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kdkit.errors import KdkitError
from kdkit.features import align_spans, map_layers, masked_mean, pool_to_spans

# ----------------------------------------------------------------------------- layer mapping


@pytest.mark.parametrize(
    ("ls", "lt", "strategy", "expected"),
    [
        (4, 12, "uniform", [(1, 3), (2, 6), (3, 9), (4, 12)]),
        (6, 12, "skip", [(1, 2), (2, 4), (3, 6), (4, 8), (5, 10), (6, 12)]),
        (4, 12, "last", [(1, 9), (2, 10), (3, 11), (4, 12)]),
        # 22-layer teacher (ModernBERT): ceil(5.5) = 6, 11, ceil(16.5) = 17, 22
        (4, 22, "uniform", [(1, 6), (2, 11), (3, 17), (4, 22)]),
        (4, 22, "skip", [(1, 5), (2, 10), (3, 15), (4, 20)]),
        (3, 22, "last", [(1, 20), (2, 21), (3, 22)]),
        # deeper student than teacher: uniform shares teacher layers
        (6, 3, "uniform", [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3), (6, 3)]),
        (3, 12, [2, 7, 12], [(1, 2), (2, 7), (3, 12)]),
        (8, 12, [[2, 3], [8, 12]], [(2, 3), (8, 12)]),
    ],
)
def test_map_layers_known_values(ls, lt, strategy, expected):
    assert map_layers(ls, lt, strategy) == expected


def test_pkd_convention_excludes_last_pair():
    # study: m(l) = (l+1)*12/L_s, last pair excluded; a 2-layer GRU keeps one pair
    assert map_layers(2, 12, "uniform", exclude_last=True) == [(1, 6)]
    assert map_layers(4, 12, "uniform", exclude_last=True) == [(1, 3), (2, 6), (3, 9)]
    assert map_layers(2, 12, include_embeddings=True) == [(0, 0), (1, 6), (2, 12)]


@pytest.mark.parametrize(
    ("ls", "lt", "strategy", "needle"),
    [
        (6, 3, "skip", "distinct teacher layer"),
        (6, 3, "last", "distinct teacher layer"),
        (3, 12, [1, 2], "3 layers"),
        (2, 12, [3, 13], "out of range"),
        (2, 12, [[3, 1]], "out of range"),
        (2, 12, [[1, 1], [1, 2]], "twice"),
        (2, 12, "middle", "unknown layer-mapping strategy"),
        (0, 12, "uniform", "at least one"),
    ],
)
def test_impossible_mappings_raise_with_fix(ls, lt, strategy, needle):
    with pytest.raises(KdkitError) as info:
        map_layers(ls, lt, strategy, where="method.layers")
    assert needle in info.value.what
    assert info.value.fix and info.value.where == "method.layers"


def test_empty_mapping_is_an_error():
    with pytest.raises(KdkitError, match="empty"):
        map_layers(1, 12, "uniform", exclude_last=True)


@given(st.integers(1, 24), st.integers(1, 24))
def test_uniform_is_monotone_and_ends_on_last_layer(ls, lt):
    pairs = map_layers(ls, lt, "uniform")
    teacher = [t for _, t in pairs]
    assert [s for s, _ in pairs] == list(range(1, ls + 1))
    assert teacher == sorted(teacher) and teacher[-1] == lt and teacher[0] >= 1
    if ls <= lt:  # injective when the teacher is deep enough
        assert len(set(teacher)) == ls


# ----------------------------------------------------------------------------- pooling


def test_masked_mean_by_hand_and_empty_rows():
    h = torch.tensor(
        [[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], [[5.0, 5.0], [0.0, 0.0], [0.0, 0.0]]]
    )
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])
    out = masked_mean(h, mask)
    assert torch.equal(out, torch.tensor([[2.0, 3.0], [0.0, 0.0]]))


def test_pool_to_spans_by_hand_and_gradient():
    h = torch.tensor([[[1.0], [3.0], [10.0], [7.0]]], requires_grad=True)
    index = torch.tensor([[0, 0, -1, 1]])
    out = pool_to_spans(h, index, 3)
    assert out.squeeze(-1).tolist() == [[2.0, 7.0, 0.0]]
    out.sum().backward()
    assert h.grad.squeeze(-1).tolist() == [[0.5, 0.5, 0.0, 1.0]]


# ----------------------------------------------------------------------------- alignment


def _tokens(text: str, pattern: str, max_tokens: int | None = None) -> list[tuple[int, int]]:
    """Offsets of a regex tokenisation wrapped in <s> ... </s> specials (offsets (0, 0))."""
    spans = [m.span() for m in re.finditer(pattern, text)][:max_tokens]
    return [(0, 0), *spans, (0, 0)]


CHAR = r"\S"  # one token per visible character
WORD = r"\w+|[^\w\s]"  # identifiers and punctuation
SPACED = r"\s?\w+|\s?[^\w\s]"  # byte-level-BPE style: the leading space belongs to the token
SUBWORD = r"[A-Za-z]{1,3}|\d|_|[^\w\s]"  # cuts identifiers into pieces of up to 3 letters


def _batch(texts, pattern, max_tokens=None, pad_offset=(0, 0)):
    rows = [_tokens(t, pattern, max_tokens) for t in texts]
    length = max(len(r) for r in rows)
    offsets = torch.tensor([r + [pad_offset] * (length - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (length - len(r)) for r in rows])
    return offsets, mask


def _stdlib_source() -> str:
    return textwrap.dedent(inspect.getsource(textwrap.indent))


def test_char_vs_word_spans_are_the_words():
    text = "foo(bar_1)"
    so, sm = _batch([text], CHAR)
    to, tm = _batch([text], WORD)
    al = align_spans(so, sm, to, tm)
    assert al.span_mask.tolist() == [[True] * 4]
    assert al.span_bounds[0].tolist() == [[0, 3], [3, 4], [4, 9], [9, 10]]
    # <s> and </s> are in no span; f,o,o -> 0; ( -> 1; b,a,r,_,1 -> 2; ) -> 3
    assert al.student_index[0].tolist() == [-1, 0, 0, 0, 1, 2, 2, 2, 2, 2, 3, -1]
    assert al.teacher_index[0].tolist() == [-1, 0, 1, 2, 3, -1]
    # pooled student = mean of its characters' states
    h = torch.arange(12.0).reshape(1, 12, 1)
    assert al.pool_student(h).squeeze(-1).tolist() == [[2.0, 4.0, 7.0, 10.0]]


def test_crossing_boundaries_merge_into_one_span():
    # student "ab|cd", teacher "a|bc|d": no shared inner boundary -> one span [0, 4)
    so = torch.tensor([[[0, 2], [2, 4]]])
    to = torch.tensor([[[0, 1], [1, 3], [3, 4]]])
    al = align_spans(so, torch.ones(1, 2), to, torch.ones(1, 3))
    assert al.span_bounds.tolist() == [[[0, 4]]]
    assert al.student_index.tolist() == [[0, 0]] and al.teacher_index.tolist() == [[0, 0, 0]]


def test_real_function_two_tokenizers_with_padding_and_truncation():
    src = _stdlib_source()
    short = "def f(x):\n    return x + 1\n"
    texts = [src, short]
    # garbage offsets on padding must be ignored through the mask
    so, sm = _batch(texts, SUBWORD, pad_offset=(99999, 100000))
    to, tm = _batch(texts, SPACED, max_tokens=60)  # teacher truncated at 60 tokens
    al = align_spans(so, sm, to, tm)
    n_words = [len(re.findall(WORD, t)) for t in texts]
    # the leading space of SPACED tokens never crosses a word, so spans are the words the
    # (truncated) teacher saw
    assert al.span_mask.sum(1).tolist() == [60, n_words[1]]
    assert al.num_spans == 60
    # every span of the short row is a word of it, in order
    words = [m.span() for m in re.finditer(WORD, short)]
    got = al.span_bounds[1][al.span_mask[1]].tolist()
    assert got == [[s - (1 if s and short[s - 1] == " " else 0), e] for s, e in words]
    # student tokens past the teacher's truncation belong to no span
    last_end = int(to[0, 60, 1])
    beyond = (so[0, :, 0] >= last_end) & sm[0].bool()
    assert beyond.any() and (al.student_index[0][beyond] == -1).all()
    assert (al.student_index[1][~sm[1].bool()] == -1).all()


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_alignment_invariants_on_random_segmentations(data):
    n = data.draw(st.integers(1, 40))

    def segmentation():
        cuts = sorted(data.draw(st.sets(st.integers(1, n - 1), max_size=n)) if n > 1 else [])
        bounds = [0, *cuts, n]
        return [(a, b) for a, b in zip(bounds, bounds[1:])]

    s_tok, t_tok = segmentation(), segmentation()
    so = torch.tensor([[(0, 0), *s_tok]])
    to = torch.tensor([[*t_tok, (0, 0)]])
    al = align_spans(so, torch.ones(so.shape[:2]), to, torch.ones(to.shape[:2]))
    shared = ({a for a, _ in s_tok} | {n}) & ({a for a, _ in t_tok} | {n})
    expected = sorted(shared)
    # the spans are exactly the intervals between shared boundaries
    assert al.span_bounds[0].tolist() == [[a, b] for a, b in zip(expected, expected[1:])]
    # every real token is in exactly the span that contains it
    for idx, toks in ((al.student_index[0, 1:], s_tok), (al.teacher_index[0, :-1], t_tok)):
        for i, (a, b) in zip(idx.tolist(), toks):
            lo, hi = al.span_bounds[0, i].tolist()
            assert lo <= a and b <= hi
    if s_tok == t_tok:
        assert al.num_spans == len(s_tok)


def test_span_truncated_inside_a_word_on_one_side_is_dropped():
    # text "alpha beta": teacher has both words, the student was truncated after "be"
    to = torch.tensor([[[0, 5], [6, 10]]])
    so = torch.tensor([[[0, 3], [3, 5], [6, 8]]])
    al = align_spans(so, torch.ones(1, 3), to, torch.ones(1, 2))
    assert al.span_bounds.tolist() == [[[0, 5]]]
    assert al.student_index.tolist() == [[0, 0, -1]] and al.teacher_index.tolist() == [[0, -1]]
