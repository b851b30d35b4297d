"""Tokenizers for models kdkit trains itself, and offset-aware encoding for any HF fast tokenizer.

Students (and the from-scratch code teacher) get their own byte-level BPE vocabulary trained on
the task's training code, with the special tokens ``<s> <pad> </s> <unk> <mask>`` (ids 0..4).
Training one takes seconds, so it is cached under ``CACHE/tokenizers/<key>/`` where the key
holds the data fingerprint and vocabulary size.

When the data layer (``kdkit.data``) provides ``train_student_tokenizer`` and
``encode_with_offsets``, those are used; the fallbacks here implement the same contract.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from kdkit.api import PAIR_SEPARATOR, Encoded, Example

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def default_cache_dir(configured: str | None = None) -> Path:
    """The cache root: ``configured``, else ``$KDKIT_CACHE``, else ``~/.cache/kdkit``."""
    if configured:
        return Path(configured).expanduser()
    try:  # the data layer owns the canonical function once it exists
        from kdkit.data.paths import cache_root

        return Path(cache_root())
    except ImportError:
        pass
    env = os.environ.get("KDKIT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "kdkit"


def _wrap_fast(tokenizer_file: str):
    """A ``PreTrainedTokenizerFast`` with RoBERTa-style specials around a ``tokenizer.json``."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_file=tokenizer_file,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        cls_token="<s>",
        sep_token="</s>",
        model_max_length=100_000,
    )


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int, cache_dir: str | Path, key: str):
    """Train (or load from cache) a byte-level BPE tokenizer; returns a HF fast tokenizer.

    Args:
        texts: the training code (the task's training split).
        vocab_size: the vocabulary size, special tokens included.
        cache_dir: the cache root.
        key: identifies the data (e.g. the task fingerprint); the cache key adds the size.
    """
    try:
        from kdkit.data.tokenizers import train_student_tokenizer

        return train_student_tokenizer(list(texts), vocab_size, cache_dir, key)
    except ImportError:
        pass
    from tokenizers import ByteLevelBPETokenizer, processors

    digest = hashlib.sha256(f"bpe-v1|{key}|{vocab_size}".encode()).hexdigest()[:16]
    folder = Path(cache_dir) / "tokenizers" / digest
    path = folder / "tokenizer.json"
    if not path.is_file():
        bpe = ByteLevelBPETokenizer()
        bpe.train_from_iterator(list(texts), vocab_size=vocab_size, min_frequency=2,
                                special_tokens=SPECIAL_TOKENS, show_progress=False)  # fmt: skip
        # <s> A </s></s> B </s>, as RoBERTa; offsets trimmed of the leading space byte
        bpe.post_processor = processors.RobertaProcessing(
            ("</s>", 2), ("<s>", 0), trim_offsets=True
        )
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"tokenizer.json.tmp{os.getpid()}"
        bpe.save(str(tmp))
        os.replace(tmp, path)  # atomic: a concurrent reader sees the whole file or none
    return _wrap_fast(str(path))


def encode_examples(tokenizer, examples: Sequence[Example], max_length: int,
                    prefix_tokens: Sequence[int] = ()) -> Encoded:  # fmt: skip
    """Tokenise examples with a HF fast tokenizer into an :class:`Encoded` with offsets.

    Pairs are encoded as one sentence-pair sequence; offsets of the second segment are shifted
    into :func:`kdkit.api.join_example`'s text. Special tokens get ``start == end``.
    ``prefix_tokens`` are inserted after the first token (UniXcoder's ``<encoder-only>``).
    """
    if not prefix_tokens and (
        all(isinstance(e, str) for e in examples) or all(not isinstance(e, str) for e in examples)
    ):
        try:
            from kdkit.data.tokenizers import encode_with_offsets

            return encode_with_offsets(tokenizer, examples, max_length)
        except ImportError:
            pass
    first = [e if isinstance(e, str) else e[0] for e in examples]
    room = max_length - len(prefix_tokens)
    # singles and pairs are tokenised by separate calls: a single must not become (text, "")
    rows_raw: dict[int, tuple[list[int], list, list, list[int] | None]] = {}
    groups = [[i for i, e in enumerate(examples) if isinstance(e, str)],
              [i for i, e in enumerate(examples) if not isinstance(e, str)]]  # fmt: skip
    for group, is_pair in zip(groups, (False, True)):
        if not group:
            continue
        if is_pair:
            out = tokenizer([examples[i][0] for i in group], [examples[i][1] for i in group],
                            truncation="longest_first", max_length=room,
                            return_offsets_mapping=True)  # fmt: skip
        else:
            out = tokenizer([examples[i] for i in group], truncation=True, max_length=room,
                            return_offsets_mapping=True)  # fmt: skip
        for j, i in enumerate(group):
            tt = list(out["token_type_ids"][j]) if "token_type_ids" in out else None
            rows_raw[i] = (list(out["input_ids"][j]), out["offset_mapping"][j],
                           out.sequence_ids(j), tt)  # fmt: skip
    special = set(tokenizer.all_special_ids)
    rows, offs, types = [], [], []
    for i in range(len(examples)):
        ids, spans, seq, tt = rows_raw[i]
        shift = len(first[i]) + len(PAIR_SEPARATOR)
        fixed = []
        for tok, (s, e), sid in zip(ids, spans, seq):
            if sid is None or tok in special:
                fixed.append((0, 0))
            elif sid == 1:
                fixed.append((s + shift, e + shift))
            else:
                fixed.append((s, e))
        if prefix_tokens:
            ids = ids[:1] + list(prefix_tokens) + ids[1:]
            fixed = fixed[:1] + [(0, 0)] * len(prefix_tokens) + fixed[1:]
            if tt is not None:
                tt = tt[:1] + [0] * len(prefix_tokens) + tt[1:]
        rows.append(ids)
        offs.append(fixed)
        types.append(tt)
    width = max(len(r) for r in rows)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    offsets = torch.zeros(len(rows), width, 2, dtype=torch.long)
    extra: dict[str, torch.Tensor] = {}
    if types and types[0] is not None:
        extra["token_type_ids"] = torch.zeros(len(rows), width, dtype=torch.long)
    for i, (r, o) in enumerate(zip(rows, offs)):
        input_ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
        offsets[i, : len(o)] = torch.tensor(o, dtype=torch.long).view(-1, 2)
        if "token_type_ids" in extra and types[i] is not None:
            extra["token_type_ids"][i, : len(types[i])] = torch.tensor(types[i])
    return Encoded(input_ids, mask, offsets, extra)
