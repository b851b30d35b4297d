"""Tokenisation shared by teachers and students: offsets-aware encoding and student BPE.

* :func:`encode_with_offsets` turns examples (a string, or a pair for clone detection) into a
  :class:`kdkit.api.Encoded` with character offsets into :func:`kdkit.api.join_example` of each
  example, for any Hugging Face *fast* tokenizer (teacher or student).
* :func:`train_student_tokenizer` trains (or loads from cache) a byte-level BPE tokenizer with the
  RoBERTa special tokens, saved so ``transformers.AutoTokenizer.from_pretrained(dir)`` loads it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from kdkit.api import PAIR_SEPARATOR, Encoded, Example
from kdkit.data.fingerprint import hash_json
from kdkit.errors import KdkitError
from kdkit.integrity import verify, write_manifest

#: Special tokens of every student tokenizer, in id order (RoBERTa's order: <s>=0, <pad>=1, ...).
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
#: Bump when the student tokenizer recipe changes (invalidates cached tokenizers).
TOKENIZER_RECIPE = 1


def encode_with_offsets(tokenizer: Any, examples: Sequence[Example], max_length: int) -> Encoded:
    """Tokenise ``examples`` with a fast tokenizer and return ids, mask and character offsets.

    * A pair ``(a, b)`` is one sentence-pair sequence (the tokenizer's own template, e.g.
      ``<s> a </s></s> b </s>``), truncated ``"longest_first"`` to ``max_length`` tokens; offsets
      of ``b``'s tokens are shifted by ``len(a) + len(PAIR_SEPARATOR)`` so they index
      ``join_example((a, b))``.
    * Special and padding tokens get the empty span ``(0, 0)``; padding is on the right.
    * ``token_type_ids`` (when the tokenizer returns them) go into ``Encoded.extra``.

    Byte-level BPE tokenizers should be built with ``trim_offsets=True`` so a ``Ġ``-prefixed token's
    span starts at its first non-space character.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise KdkitError(
            f"tokenizer {type(tokenizer).__name__} is not a fast tokenizer",
            where="encode_with_offsets",
            fix="load it with AutoTokenizer.from_pretrained(..., use_fast=True); "
            "character offsets need a Rust-backed tokenizer",
        )
    if not examples:
        raise KdkitError(
            "no examples to encode", where="encode_with_offsets", fix="pass at least one example"
        )
    is_pair = [not isinstance(e, str) for e in examples]
    if any(is_pair) and not all(is_pair):
        raise KdkitError(
            "a batch mixes single texts and pairs",
            where="encode_with_offsets",
            fix="encode single-text and pair examples in separate batches",
        )
    firsts = [e[0] if p else e for e, p in zip(examples, is_pair)]
    seconds = [e[1] for e in examples] if all(is_pair) else None
    enc = tokenizer(
        firsts,
        seconds,
        truncation="longest_first" if seconds is not None else True,
        max_length=max_length,
        padding="longest",
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
        return_attention_mask=True,
        return_tensors="pt",
    )
    offsets = enc["offset_mapping"].clone().long()  # [B, L, 2]
    special = enc["special_tokens_mask"].bool() | (enc["attention_mask"] == 0)  # [B, L]
    if seconds is not None:
        for b in range(len(examples)):
            seq_ids = enc.sequence_ids(b)  # None for special/pad tokens, 0 or 1 otherwise
            shift = len(firsts[b]) + len(PAIR_SEPARATOR)
            second = torch.tensor([s == 1 for s in seq_ids], dtype=torch.bool)
            offsets[b, second] += shift
    offsets[special] = 0
    extra: dict[str, torch.Tensor] = {}
    if "token_type_ids" in enc:
        extra["token_type_ids"] = enc["token_type_ids"].long()
    return Encoded(
        input_ids=enc["input_ids"].long(),
        attention_mask=enc["attention_mask"].long(),
        offsets=offsets,
        extra=extra,
    )


def _build_bpe(texts: Iterable[str], vocab_size: int) -> Any:
    """Train a byte-level BPE ``tokenizers.Tokenizer`` with the RoBERTa template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    # add_prefix_space=False: code is not prose; the first token of a text has no leading space.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    sep, cls = tok.token_to_id("</s>"), tok.token_to_id("<s>")
    assert sep is not None and cls is not None  # special tokens are always in the vocabulary
    tok.post_processor = processors.RobertaProcessing(
        ("</s>", sep),  # sep
        ("<s>", cls),  # cls
        trim_offsets=True,
        add_prefix_space=False,
    )
    return tok


def bpe_tokenizer(texts: Iterable[str], vocab_size: int, model_max_length: int = 1 << 20) -> Any:
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on ``texts``, not cached (the recipe
    of :func:`train_student_tokenizer`: RoBERTa's special tokens and templates)."""
    return _wrap(_build_bpe(texts, vocab_size), model_max_length)


def _wrap(tok: Any, model_max_length: int) -> Any:
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        cls_token="<s>",
        sep_token="</s>",
        model_max_length=model_max_length,
        padding_side="right",
    )


def student_tokenizer_dir(cache_dir: str | os.PathLike[str], key: str, vocab_size: int) -> Path:
    """The cache directory of the student tokenizer for data ``key`` and ``vocab_size``."""
    name = hash_json({"key": key, "vocab": vocab_size, "recipe": TOKENIZER_RECIPE})
    return Path(cache_dir) / "tokenizers" / f"bpe-{vocab_size}-{name}"


def train_student_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    cache_dir: str | os.PathLike[str] | None,
    key: str,
    model_max_length: int = 1 << 20,
) -> Any:
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on ``texts`` (the training split).

    Args:
        texts: training code (an iterable; it is consumed only when nothing is cached).
        vocab_size: target vocabulary size including the 5 special tokens (the study: 1k-50k).
            A small corpus may give fewer tokens than asked: ``len(tokenizer)`` is the truth.
        cache_dir: kdkit cache root (``kdkit.data.paths.cache_root()``); ``None`` = no cache.
        key: identifies the training data (e.g. ``task.fingerprint()``); with ``vocab_size`` it
            keys the cache, so the same data and size reuse the saved tokenizer.
        model_max_length: recorded in the tokenizer config.

    Special tokens are ``<s> <pad> </s> <unk> <mask>`` (ids 0-4); encoding uses the RoBERTa
    templates ``<s> A </s>`` and ``<s> A </s></s> B </s>``. The directory is written with
    ``save_pretrained`` (atomically), so ``AutoTokenizer.from_pretrained(dir)`` loads it.
    """
    if vocab_size < len(SPECIAL_TOKENS) + 256:
        raise KdkitError(
            f"vocab_size {vocab_size} is too small for a byte-level BPE",
            where="student tokenizer",
            fix=f"use at least {len(SPECIAL_TOKENS) + 256} (the study uses 1,000-50,000)",
        )
    if cache_dir is None:
        return _wrap(_build_bpe(texts, vocab_size), model_max_length)

    target = student_tokenizer_dir(cache_dir, key, vocab_size)
    if (target / "tokenizer.json").exists():
        return load_cached_tokenizer(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = _wrap(_build_bpe(texts, vocab_size), model_max_length)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        tokenizer.save_pretrained(str(tmp))
        (tmp / "kdkit_tokenizer.json").write_text(
            json.dumps({"key": key, "vocab_size": vocab_size, "recipe": TOKENIZER_RECIPE}),
            encoding="utf-8",
        )
        write_manifest(tmp, "tokenizer")
        try:
            os.replace(tmp, target)  # atomic on one filesystem; a concurrent writer may win
        except OSError:
            if not (target / "tokenizer.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return load_cached_tokenizer(target)


def load_cached_tokenizer(target: Path) -> Any:
    """A cached tokenizer directory, checked against its manifest, loaded by ``AutoTokenizer``;
    a damaged one is a :class:`KdkitError` naming the cache entry and ``kdkit cache clear``."""
    from transformers import AutoTokenizer

    fix = (
        f"delete the cache entry with `kdkit cache clear {target.name}`; the tokenizer is "
        "trained again on the next run"
    )
    verify(target, artefact=f"cache entry tokenizers/{target.name}", fix=fix)
    try:
        return AutoTokenizer.from_pretrained(str(target))
    except Exception as exc:  # tokenizers raises its own Exception types on a damaged file
        raise KdkitError(
            f"the cached tokenizer cannot be loaded: {type(exc).__name__}: {str(exc)[:300]}",
            where=f"cache entry tokenizers/{target.name} ({target})",
            fix=fix,
        ) from None
