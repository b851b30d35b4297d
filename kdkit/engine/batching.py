"""Splits tokenised once, batched many times.

Every example of a split is tokenised once per model (student, and the teacher when it runs
live) and kept per row without padding; a batch pads its rows to the longest one. This saves
re-tokenising each epoch and keeps batches as short as their longest row.

Batch order is a permutation drawn from a generator seeded with ``seed + epoch``: a resumed run
draws the same order and skips the batches it already did.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from kdkit.api import Batch, Encoded, Example, Student, Teacher, join_example

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    import datasets

#: Rows tokenised per call when a split is encoded (bounds the memory of one call).
ENCODE_CHUNK = 512


def split_examples(split: datasets.Dataset, is_pair: bool) -> list[Example]:
    """The split's examples: ``text`` or ``(text, text_pair)`` per row."""
    if is_pair:
        return list(zip(split["text"], split["text_pair"]))
    return list(split["text"])


@dataclass
class EncodedRows:
    """One tokenisation of a whole split, stored per row without padding."""

    input_ids: list[torch.Tensor]
    offsets: list[torch.Tensor]
    extra: dict[str, list[torch.Tensor]]
    pad_id: int

    @classmethod
    def build(
        cls,
        encode: Callable[[Sequence[Example], int], Encoded],
        examples: Sequence[Example],
        max_length: int,
        pad_id: int,
    ) -> EncodedRows:
        """Tokenise ``examples`` in chunks with ``encode`` and strip each row's padding."""
        ids: list[torch.Tensor] = []
        offs: list[torch.Tensor] = []
        extra: dict[str, list[torch.Tensor]] = {}
        for start in range(0, len(examples), ENCODE_CHUNK):
            enc = encode(examples[start : start + ENCODE_CHUNK], max_length)
            lengths = enc.attention_mask.sum(1).tolist()
            for i, n in enumerate(lengths):
                ids.append(enc.input_ids[i, :n].clone())
                offs.append(enc.offsets[i, :n].clone())
                for k, v in enc.extra.items():
                    extra.setdefault(k, []).append(v[i, :n].clone())
        return cls(ids, offs, extra, pad_id)

    def __len__(self) -> int:
        return len(self.input_ids)

    def collate(self, rows: Sequence[int]) -> Encoded:
        """Right-pad the given rows into an :class:`Encoded` (``[B, L]``, L = longest row)."""
        width = max(int(self.input_ids[r].numel()) for r in rows)
        b = len(rows)
        input_ids = torch.full((b, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros(b, width, dtype=torch.long)
        offsets = torch.zeros(b, width, 2, dtype=torch.long)
        extra = {k: torch.zeros(b, width, dtype=torch.long) for k in self.extra}
        for j, r in enumerate(rows):
            n = int(self.input_ids[r].numel())
            input_ids[j, :n] = self.input_ids[r]
            mask[j, :n] = 1
            offsets[j, :n] = self.offsets[r]
            for k in extra:
                extra[k][j, :n] = self.extra[k][r]
        return Encoded(input_ids, mask, offsets, extra)


@dataclass
class SplitData:
    """A split ready for batching: texts, labels and the tokenisations that are needed."""

    name: str
    texts: list[str]
    labels: torch.Tensor  # [N] int64
    student: EncodedRows
    teacher: EncodedRows | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def batch(self, rows: Sequence[int]) -> Batch:
        """The :class:`Batch` of the given row numbers."""
        index = torch.tensor(list(rows), dtype=torch.long)
        return Batch(
            texts=[self.texts[r] for r in rows],
            labels=self.labels[index],
            index=index,
            student=self.student.collate(rows),
            teacher=None if self.teacher is None else self.teacher.collate(rows),
            split=self.name,
        )


@dataclass(frozen=True)
class Encoder:
    """One model's tokenisation: ``encode(examples, max_length) -> Encoded`` and its pad id."""

    encode: Callable[[Sequence[Example], int], Encoded]
    pad_id: int = 0

    @classmethod
    def of_student(cls, student: Student) -> Encoder:
        """A student's ``encode`` with the pad id of its ``tokenizer`` (0 when it has none)."""
        return cls(student.encode, pad_id(student))

    @classmethod
    def of_teacher(cls, teacher: Teacher) -> Encoder:
        """A teacher's ``encode``; the pad id of the tokenizer of the model it wraps
        (``teacher.model.tokenizer``), else 0 — what the engine has always padded teachers
        with (the attention mask hides padding, whatever its id)."""
        return cls(teacher.encode, pad_id(getattr(teacher, "model", None)))


def pad_id(model: object) -> int:
    """``model.tokenizer.pad_token_id``, or 0 when there is none."""
    pad = getattr(getattr(model, "tokenizer", None), "pad_token_id", None)
    return int(pad) if pad is not None else 0


def make_split(
    name: str,
    split: datasets.Dataset,
    is_pair: bool,
    max_length: int,
    student: Encoder,
    teacher: Encoder | None = None,
) -> SplitData:
    """Tokenise a ``datasets`` split for the student (and the teacher, when it runs live or its
    outputs must be cached)."""
    examples = split_examples(split, is_pair)
    texts = [join_example(e) for e in examples]
    labels = torch.tensor(list(split["label"]), dtype=torch.long)
    rows = EncodedRows.build(student.encode, examples, max_length, student.pad_id)
    teacher_rows = None
    if teacher is not None:
        teacher_rows = EncodedRows.build(teacher.encode, examples, max_length, teacher.pad_id)
    return SplitData(name, texts, labels, rows, teacher_rows)


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The row order of one epoch: a permutation seeded by ``seed`` and ``epoch`` only."""
    # mod 2**64: torch's own reading of a seed (-1 is 2**64 - 1), so any seed < 2**63 fits
    gen = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**64)
    return torch.randperm(n, generator=gen).tolist()


def batches_of(order: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Consecutive batches of ``order`` (the last one may be smaller)."""
    for start in range(0, len(order), batch_size):
        yield list(order[start : start + batch_size])


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Number of optimisation steps in one epoch."""
    return (n + batch_size - 1) // batch_size
