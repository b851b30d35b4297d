"""Tiny, fast, real components for tests: a task, a teacher and a student that run on CPU in ms.

The data is real code: function sources from the running interpreter's standard library, labelled
by a property of the code itself (3 classes: the function raises / loops but does not raise /
neither). Teacher and student tokenise differently (words vs. 3-character pieces) so that
methods aligning tokens by character offsets are exercised for real.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from kdkit.api import (
    Batch,
    Encoded,
    Example,
    ModelInfo,
    ModelOutput,
    Needs,
    Student,
    join_example,
)

LABELS = ("raises", "loops", "plain")
_WORD = re.compile(r"\w+|[^\w\s]")
_MODULES = (
    "shutil",
    "posixpath",
    "ntpath",
    "genericpath",
    "calendar",
    "base64",
    "gettext",
    "textwrap",
)


def _label(source: str) -> int:
    tree = ast.parse(source)
    nodes = list(ast.walk(tree))
    if any(isinstance(n, ast.Raise) for n in nodes):
        return 0
    if any(isinstance(n, (ast.For, ast.While, ast.comprehension)) for n in nodes):
        return 1
    return 2


def tiny_examples(limit: int = 48) -> list[tuple[str, int]]:
    """Up to ``limit`` ``(function source, label)`` pairs from real stdlib modules, in a fixed order."""
    return list(_tiny_examples(limit))


@functools.lru_cache(maxsize=8)
def _tiny_examples(limit: int) -> tuple[tuple[str, int], ...]:
    import importlib

    per_label = limit // len(LABELS) + 1
    out: list[tuple[str, int]] = []
    for mod_name in _MODULES:
        module = importlib.import_module(mod_name)
        for _name, obj in sorted(vars(module).items()):
            if inspect.isfunction(obj) and obj.__module__ == mod_name:
                try:
                    src = inspect.getsource(obj)
                except (OSError, TypeError):
                    continue
                if src.startswith(" ") or len(src) > 1500:
                    continue
                try:
                    label = _label(src)
                except SyntaxError:
                    continue
                if sum(1 for _, y in out if y == label) < per_label:
                    out.append((src, label))
    return tuple(out[:limit])


# ----------------------------------------------------------------------------- tokenisation


def _spans(text: str, piece: int | None) -> list[tuple[int, int]]:
    spans = []
    for m in _WORD.finditer(text):
        if piece is None:
            spans.append(m.span())
        else:
            spans.extend((s, min(s + piece, m.end())) for s in range(m.start(), m.end(), piece))
    return spans


def _token_id(text: str, vocab_size: int) -> int:
    digest = hashlib.blake2b(text.encode(), digest_size=4).digest()
    return 3 + int.from_bytes(digest, "little") % (vocab_size - 3)  # 0 pad, 1 <s>, 2 </s>


def tiny_encode(
    examples: Sequence[Example], max_length: int, *, piece: int | None, vocab_size: int
) -> Encoded:
    """Hash-vocabulary tokenisation with real character offsets.

    ``piece=None`` splits into words and punctuation; ``piece=3`` further cuts words into
    3-character pieces, so two tokenisations of one text differ but share character boundaries.
    """
    rows, offs = [], []
    for example in examples:
        text = join_example(example)
        spans = _spans(text, piece)[: max_length - 2]
        rows.append([1] + [_token_id(text[s:e], vocab_size) for s, e in spans] + [2])
        offs.append([(0, 0), *spans, (0, 0)])
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    offsets = torch.zeros(len(rows), width, 2, dtype=torch.long)
    for i, (r, o) in enumerate(zip(rows, offs)):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
        offsets[i, : len(o)] = torch.tensor(o)
    return Encoded(ids, mask, offsets)


# ----------------------------------------------------------------------------- models


class TinyEncoder(nn.Module):
    """Embedding + ``num_layers`` Transformer layers + a head on the first (``<s>``) position."""

    def __init__(self, vocab_size: int, hidden: int, num_layers: int, num_labels: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, hidden, padding_idx=0)
        self.pos = nn.Embedding(512, hidden)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(hidden, 2, 2 * hidden, dropout=0.1, batch_first=True)
            for _ in range(num_layers)
        )
        self.head = nn.Linear(hidden, num_labels)

    def run(self, enc: Encoded, needs: Needs) -> ModelOutput:
        """Forward pass returning what ``needs`` asks (layer 0 = embeddings)."""
        pos = torch.arange(enc.input_ids.shape[1], device=enc.input_ids.device)
        h = self.embed(enc.input_ids) + self.pos(pos)[None]  # [B, L, H]
        states = [h]
        pad = enc.attention_mask == 0
        for layer in self.layers:
            h = layer(h, src_key_padding_mask=pad)
            states.append(h)
        feature = h[:, 0]  # [B, H]: the <s> state
        return ModelOutput(
            logits=self.head(feature),
            hidden_states={i: states[i] for i in needs.hidden_layers},
            pooled={i: states[i][:, 0] for i in needs.pooled_layers},
            embedding=feature if needs.embedding else None,
            attention_mask=enc.attention_mask,
            offsets=enc.offsets,
        )


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class TinyTeacher:
    """A frozen :class:`TinyEncoder` (word tokens) satisfying :class:`kdkit.api.Teacher`."""

    def __init__(self, num_labels: int = len(LABELS), *, seed: int = 1234, layers: int = 4) -> None:
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        self.model = TinyEncoder(257, 24, layers, num_labels).eval()
        torch.random.set_rng_state(gen_state)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.info = ModelInfo("tiny-teacher", "tiny", layers, 24, _count(self.model))

    def encode(self, examples: Sequence[Example], max_length: int) -> Encoded:
        return tiny_encode(examples, max_length, piece=None, vocab_size=257)

    @torch.no_grad()
    def __call__(self, encoded: Encoded, needs: Needs) -> ModelOutput:
        self.model.eval()
        return self.model.run(encoded, needs)

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for name, tensor in sorted(self.model.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.numpy().tobytes())
        return h.hexdigest()[:16]


class TinyStudent(Student):
    """A trainable :class:`TinyEncoder` (3-character pieces) satisfying :class:`kdkit.api.Student`."""

    def __init__(self, num_labels: int = len(LABELS), *, layers: int = 2, hidden: int = 16) -> None:
        super().__init__()
        self.model = TinyEncoder(131, hidden, layers, num_labels)
        self.info = ModelInfo("tiny-student", "tiny", layers, hidden, _count(self.model))

    def encode(self, examples: Sequence[Example], max_length: int) -> Encoded:
        return tiny_encode(examples, max_length, piece=3, vocab_size=131)

    def forward(self, encoded: Encoded, needs: Needs) -> ModelOutput:
        return self.model.run(encoded, needs)

    def save(self, directory: str) -> None:
        import os

        from safetensors.torch import save_file

        os.makedirs(directory, exist_ok=True)
        save_file(self.model.state_dict(), os.path.join(directory, "model.safetensors"))


def tiny_batch(
    n: int = 6,
    *,
    teacher: TinyTeacher | None = None,
    student: TinyStudent | None = None,
    max_length: int = 64,
    offset: int = 0,
) -> Batch:
    """A batch of ``n`` real stdlib functions tokenised by both tiny models.

    Rows have different lengths, so both tokenisations carry padding.
    """
    examples = tiny_examples()[offset : offset + n]
    teacher = teacher or TinyTeacher()
    student = student or TinyStudent()
    codes = [code for code, _ in examples]
    return Batch(
        texts=[join_example(c) for c in codes],
        labels=torch.tensor([label for _, label in examples]),
        index=torch.arange(offset, offset + len(examples)),
        student=student.encode(codes, max_length),
        teacher=teacher.encode(codes, max_length),
    )


class TinyTask:
    """A :class:`kdkit.api.Task` over :func:`tiny_examples` (48 functions: 32/8/8)."""

    name = "tiny"
    labels: Sequence[str] = LABELS
    headline_metric = "accuracy"
    is_pair = False

    def load(self) -> Any:  # a datasets.DatasetDict
        import datasets

        rows = tiny_examples()
        cols = lambda part: {"text": [t for t, _ in part], "label": [y for _, y in part]}  # noqa: E731
        return datasets.DatasetDict(
            train=datasets.Dataset.from_dict(cols(rows[:32])),
            validation=datasets.Dataset.from_dict(cols(rows[32:40])),
            test=datasets.Dataset.from_dict(cols(rows[40:48])),
        )

    def fingerprint(self) -> str:
        text = "\0".join(t for t, _ in tiny_examples())
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def evaluate(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        return {"accuracy": float((logits.argmax(-1) == labels).float().mean())}
