"""The engine's tokenisation entry points: thin wrappers over :mod:`kdkit.data.tokenizers`.

Students (and the from-scratch code teacher) get their own byte-level BPE vocabulary trained on
the task's training code (``<s> <pad> </s> <unk> <mask>``, ids 0..4), cached by data key and
size; any HF fast tokenizer is encoded with character offsets by
:func:`kdkit.data.tokenizers.encode_with_offsets`. This module only adds what models need on
top: an input prefix (UniXcoder's ``<encoder-only>``) and the cache root as a ``Path``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from kdkit.api import Encoded, Example
from kdkit.data.paths import cache_root
from kdkit.data.tokenizers import encode_with_offsets, train_student_tokenizer

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from transformers import PreTrainedTokenizerFast


def default_cache_dir(configured: str | None = None) -> Path:
    """The cache root: ``configured``, else ``$KDKIT_CACHE``, else ``~/.cache/kdkit``."""
    return Path(cache_root(configured))


def train_bpe_tokenizer(
    texts: Iterable[str], vocab_size: int, cache_dir: str | Path, key: str
) -> PreTrainedTokenizerFast:
    """Train (or load from cache) a byte-level BPE tokenizer; returns a HF fast tokenizer.

    Args:
        texts: the training code (the task's training split).
        vocab_size: the vocabulary size, special tokens included.
        cache_dir: the cache root.
        key: identifies the data (e.g. the task fingerprint); the cache key adds the size.
    """
    return train_student_tokenizer(list(texts), vocab_size, cache_dir, key)


def encode_examples(
    tokenizer: PreTrainedTokenizerFast,
    examples: Sequence[Example],
    max_length: int,
    prefix_tokens: Sequence[int] = (),
) -> Encoded:
    """Tokenise examples with a HF fast tokenizer into an :class:`Encoded` with offsets.

    ``prefix_tokens`` are inserted after the first token (UniXcoder's encoder-only input
    ``<s> <encoder-only> </s> code </s>``); they count towards ``max_length`` and get empty spans.
    """
    enc = encode_with_offsets(tokenizer, examples, max_length - len(prefix_tokens))
    if not prefix_tokens:
        return enc
    b = enc.input_ids.shape[0]
    k = len(prefix_tokens)
    prefix = torch.tensor(list(prefix_tokens), dtype=torch.long).expand(b, k)  # [B, k]

    def insert(t: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        # every row starts with a real token (<s>), so the prefix goes in at column 1
        return torch.cat([t[:, :1], value, t[:, 1:]], dim=1)

    extra = {name: insert(t, torch.zeros(b, k, dtype=t.dtype)) for name, t in enc.extra.items()}
    return Encoded(
        input_ids=insert(enc.input_ids, prefix),
        attention_mask=insert(enc.attention_mask, torch.ones(b, k, dtype=torch.long)),
        offsets=insert(enc.offsets, torch.zeros(b, k, 2, dtype=torch.long)),
        extra=extra,
    )
