"""Student BPE and encode_with_offsets: offsets must point at each token's source characters."""

from __future__ import annotations

import inspect
import json
import textwrap

import pytest
import torch
from transformers import AutoTokenizer

from kdkit.api import PAIR_SEPARATOR, join_example
from kdkit.data.tokenizers import (
    SPECIAL_TOKENS,
    encode_with_offsets,
    student_tokenizer_dir,
    train_student_tokenizer,
)
from kdkit.errors import KdkitError

CORPUS = [inspect.getsource(m) for m in (json.decoder, json.encoder, textwrap)]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return train_student_tokenizer(CORPUS, 1000, tmp_path_factory.mktemp("tok"), key="t")


def check_offsets(tokenizer, text: str, ids: list[int], offsets: list[list[int]], mask: list[int]):
    """Each real token's span reproduces its characters (modulo spaces trimmed at its ends)."""
    checked = 0
    for tid, (start, end), m in zip(ids, offsets, mask):
        if not m or tid in tokenizer.all_special_ids:
            assert (start, end) == (0, 0)
            continue
        piece = tokenizer.convert_tokens_to_string([tokenizer.convert_ids_to_tokens(tid)])
        if "\ufffd" in piece:  # a byte token inside a multi-byte character
            assert 0 <= start < end <= len(text)
            continue
        # trim_offsets drops the spaces at either end of a token (Ġ prefix, "\nĠĠĠ" indents).
        assert text[start:end] == piece.strip(" ")
        checked += 1
    return checked


def test_student_tokenizer_special_tokens_and_reload(tokenizer, tmp_path):
    assert tokenizer.convert_ids_to_tokens(list(range(5))) == SPECIAL_TOKENS
    assert len(tokenizer) == 1000
    enc = tokenizer("a = 1", "b = 2")
    toks = tokenizer.convert_ids_to_tokens(enc["input_ids"])
    # RoBERTa pair template: <s> A </s></s> B </s>
    assert toks[:6] == ["<s>", "a", "Ġ=", "Ġ1", "</s>", "</s>"]
    assert toks[6] == "b" and toks[-1] == "</s>" and toks.count("</s>") == 3
    # Cached: same data key and size -> the same directory, loadable by AutoTokenizer.
    tok = train_student_tokenizer(CORPUS, 1000, tmp_path, key="k")
    path = student_tokenizer_dir(tmp_path, "k", 1000)
    assert (path / "tokenizer.json").is_file()
    again = train_student_tokenizer(iter(()), 1000, tmp_path, key="k")  # data never read
    auto = AutoTokenizer.from_pretrained(str(path))
    code = "def f(x):\n    return x + 1\n"
    assert again(code)["input_ids"] == tok(code)["input_ids"] == auto(code)["input_ids"]


def test_vocab_too_small_is_a_user_error(tmp_path):
    with pytest.raises(KdkitError, match="too small"):
        train_student_tokenizer(CORPUS, 100, tmp_path, key="x")


def test_offsets_single_texts(tokenizer):
    texts = [
        "def f(x):\n    return x + 1  # comment\n",
        "class A:\n    s = 'naïve café'\n\n    def m(self):  pass\n",
        textwrap.dedent(inspect.getsource(json.dumps))[:600],
    ]
    enc = encode_with_offsets(tokenizer, texts, max_length=64)
    assert enc.input_ids.shape == enc.attention_mask.shape == enc.offsets.shape[:2]
    assert enc.offsets.dtype == torch.int64
    checked = 0
    for b, text in enumerate(texts):
        checked += check_offsets(
            tokenizer,
            text,
            enc.input_ids[b].tolist(),
            enc.offsets[b].tolist(),
            enc.attention_mask[b].tolist(),
        )
        # Right padding: the mask is 1...1 0...0.
        row = enc.attention_mask[b].tolist()
        assert row == sorted(row, reverse=True)
    assert checked > 40
    assert enc.attention_mask[2].sum() == 64  # the long text is truncated to max_length


def test_offsets_pairs_are_shifted_into_the_joined_text(tokenizer):
    pairs = [("x = 1\n\ny = 2", "def g(a):\n    return a"), ("a", "b + c")]
    enc = encode_with_offsets(tokenizer, pairs, max_length=128)
    for b, pair in enumerate(pairs):
        text = join_example(pair)
        check_offsets(
            tokenizer,
            text,
            enc.input_ids[b].tolist(),
            enc.offsets[b].tolist(),
            enc.attention_mask[b].tolist(),
        )
        spans = [
            tuple(o)
            for o, m in zip(enc.offsets[b].tolist(), enc.attention_mask[b])
            if m and o[1] > o[0]
        ]
        shift = len(pair[0]) + len(PAIR_SEPARATOR)
        assert any(s >= shift for s, _ in spans), "second segment tokens are shifted"
        assert all(e <= len(pair[0]) or s >= shift for s, e in spans), (
            "no token spans the separator"
        )
    tokens = tokenizer.convert_ids_to_tokens(enc.input_ids[1].tolist())
    assert tokens[: tokens.index("<pad>") if "<pad>" in tokens else None].count("</s>") == 3


def test_pair_truncation_is_longest_first(tokenizer):
    long_a = "x = 1\n" * 50
    enc = encode_with_offsets(tokenizer, [(long_a, "y = 2")], max_length=24)
    assert enc.input_ids.shape[1] == 24
    text = join_example((long_a, "y = 2"))
    covered = "".join(text[s:e] for s, e in enc.offsets[0].tolist())
    assert covered.endswith("y=2")  # the short second segment survives whole


def test_bert_style_tokenizer_gets_token_type_ids(tmp_path):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(
        CORPUS,
        trainers.WordPieceTrainer(
            vocab_size=500, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"], show_progress=False
        ),
    )
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )
    pair = ("return Value", "value = 1")
    enc = encode_with_offsets(fast, [pair], max_length=32)
    types = enc.extra["token_type_ids"][0].tolist()
    assert 0 in types and 1 in types
    text = join_example(pair)
    words = [text[s:e] for s, e in enc.offsets[0].tolist() if e > s]
    assert words == ["return", "Value", "value", "=", "1"]  # original case, second part shifted


def test_slow_tokenizer_and_mixed_batches_are_rejected(tokenizer):
    class Slow:
        is_fast = False

    with pytest.raises(KdkitError, match="not a fast tokenizer"):
        encode_with_offsets(Slow(), ["x"], 8)
    with pytest.raises(KdkitError, match="mixes"):
        encode_with_offsets(tokenizer, ["x", ("a", "b")], 8)
