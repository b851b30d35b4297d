"""A ``transformers`` sequence classifier with its tokenizer, as a kdkit :class:`Student`.

One class serves three roles: the ``transformer`` student (a RoBERTa built from scratch with a
BPE vocabulary trained on the task), the model ``kdkit teach`` fine-tunes, and — frozen — the
model inside every Hugging Face teacher. It saves in ``save_pretrained`` format, so whatever
kdkit trains loads with ``AutoModelForSequenceClassification.from_pretrained``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import torch

from kdkit.api import Encoded, Example, ModelInfo, ModelOutput, Needs, Student
from kdkit.engine.tokenization import encode_examples

#: File beside a saved model that tells kdkit how to rebuild it (family, labels, prefix).
KDKIT_META = "kdkit.json"


def _quiet_transformers() -> None:
    """Hide ``transformers``' per-file progress bars (kdkit saves and loads models often)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def count_parameters(module: torch.nn.Module) -> int:
    """Exact number of parameters (shared tensors counted once)."""
    seen, total = set(), 0
    for p in module.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def _family(config: Any) -> str:
    return str(getattr(config, "model_type", "hf"))


class HFClassifier(Student):
    """A ``transformers`` ``...ForSequenceClassification`` model plus its fast tokenizer.

    Args:
        model: the classifier.
        tokenizer: its fast tokenizer (offsets are required).
        name: a readable name for summaries.
        prefix_tokens: token ids inserted after ``<s>`` (UniXcoder's ``<encoder-only>`` mode).
        family: overrides the family recorded in :class:`ModelInfo`.
    """

    def __init__(self, model, tokenizer, *, name: str, prefix_tokens: Sequence[int] = (),
                 family: str | None = None, meta: dict[str, Any] | None = None) -> None:  # fmt: skip
        super().__init__()
        if not getattr(tokenizer, "is_fast", False):
            from kdkit.errors import KdkitError

            raise KdkitError(
                f"the tokenizer of {name} is not a fast tokenizer, so it has no character offsets",
                where=name,
                fix="save the model with a tokenizer.json (AutoTokenizer.from_pretrained(..., "
                "use_fast=True).save_pretrained(DIR))",
            )
        self.model = model
        self.tokenizer = tokenizer
        self.prefix_tokens = tuple(prefix_tokens)
        self.meta = dict(meta or {})
        cfg = model.config
        layers = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "num_layers", 0)
        hidden = getattr(cfg, "hidden_size", None) or getattr(cfg, "d_model", 0)
        self._captured: torch.Tensor | None = None
        head = getattr(model, "classifier", None) or getattr(model, "classification_head", None)
        if head is not None:  # read the exact feature the head consumes (RKD, contrastive)
            head.register_forward_pre_hook(self._capture)
        self.info = ModelInfo(name, family or _family(cfg), int(layers), int(hidden),
                              count_parameters(model))  # fmt: skip

    def _capture(self, module: torch.nn.Module, args: tuple) -> None:
        feature = args[0]
        self._captured = feature[:, 0] if feature.dim() == 3 else feature  # [B, H]

    @property
    def num_labels(self) -> int:
        """Number of classes of the head."""
        return int(self.model.config.num_labels)

    def encode(self, examples: Sequence[Example], max_length: int) -> Encoded:
        """Tokenise with the model's own tokenizer (offsets into the joined text)."""
        return encode_examples(self.tokenizer, examples, max_length, self.prefix_tokens)

    def forward(self, encoded: Encoded, needs: Needs) -> ModelOutput:  # type: ignore[override]
        """Run the classifier; hidden states are requested only when ``needs`` asks for them."""
        want_states = bool(needs.hidden_layers or needs.pooled_layers)
        self._captured = None
        out = self.model(input_ids=encoded.input_ids, attention_mask=encoded.attention_mask,
                         output_hidden_states=want_states, **encoded.extra)  # fmt: skip
        states = getattr(out, "hidden_states", None) or getattr(out, "encoder_hidden_states", None)
        hidden = {i: states[i] for i in needs.hidden_layers} if want_states else {}
        # pooled feature of a layer: its first (<s>/[CLS]) token state [B, H]
        pooled = {i: states[i][:, 0] for i in needs.pooled_layers} if want_states else {}
        return ModelOutput(
            logits=out.logits,
            hidden_states=hidden,
            pooled=pooled,
            embedding=self._captured if needs.embedding else None,
            attention_mask=encoded.attention_mask,
            offsets=encoded.offsets,
        )

    def save(self, directory: str) -> None:
        """``save_pretrained`` the model (safetensors) and tokenizer, plus ``kdkit.json``."""
        os.makedirs(directory, exist_ok=True)
        _quiet_transformers()
        self.model.save_pretrained(directory, safe_serialization=True)
        self.tokenizer.save_pretrained(directory)
        meta = {"kind": "hf", "name": self.info.name, "family": self.info.family,
                "prefix_tokens": list(self.prefix_tokens), **self.meta}  # fmt: skip
        with open(os.path.join(directory, KDKIT_META), "w", encoding="utf-8") as fh:
            json.dump(meta, fh, indent=2)


def load_hf_classifier(directory: str, *, num_labels: int | None = None, name: str | None = None,
                       local_files_only: bool = True) -> HFClassifier:  # fmt: skip
    """Load a saved classifier (a directory, or a hub id when ``local_files_only`` is False)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    _quiet_transformers()
    meta: dict[str, Any] = {}
    meta_path = os.path.join(directory, KDKIT_META)
    if os.path.isfile(meta_path):
        with open(meta_path, encoding="utf-8") as fh:
            meta = json.load(fh)
    kwargs: dict[str, Any] = {"local_files_only": local_files_only}
    if num_labels is not None:
        kwargs.update(num_labels=num_labels, ignore_mismatched_sizes=True)
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=local_files_only)
    model = AutoModelForSequenceClassification.from_pretrained(directory, **kwargs)
    extra = {k: v for k, v in meta.items() if k not in ("kind", "name", "family", "prefix_tokens")}
    return HFClassifier(model, tokenizer, name=name or meta.get("name") or str(directory),
                        prefix_tokens=meta.get("prefix_tokens", ()), family=meta.get("family"),
                        meta=extra)  # fmt: skip
