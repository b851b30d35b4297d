"""A ``transformers`` sequence classifier with its tokenizer, as a kdkit :class:`Student`.

Shared by the built-in model plugins (not an entry point): one class serves as the
``transformer`` student (a RoBERTa built from scratch with a BPE vocabulary trained on the task),
the model ``kdkit teach`` fine-tunes, and — frozen — the model inside every Hugging Face teacher.
It saves in ``save_pretrained`` format, so whatever kdkit trains loads with
``AutoModelForSequenceClassification.from_pretrained``; ``kdkit.json`` names the component that
made it (:class:`~kdkit.models.ComponentRef`), whose ``load`` callback is :func:`load_hf_classifier`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from kdkit.api import Encoded, Example, ModelInfo, ModelOutput, Needs, Student
from kdkit.engine.tokenization import encode_examples
from kdkit.errors import KdkitError
from kdkit.models import (
    ComponentRef,
    count_parameters,
    label_maps,
    model_fields,
    read_model_meta,
    saved_component,
    write_model_meta,
)


def quiet_transformers() -> None:
    """Hide ``transformers``' per-file progress bars (kdkit saves and loads models often)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


class HFClassifier(Student):
    """A ``transformers`` ``...ForSequenceClassification`` model plus its fast tokenizer.

    Args:
        model: the classifier.
        tokenizer: its fast tokenizer (offsets are required).
        name: a readable name for summaries.
        component: the registered component that reloads it (recorded in ``kdkit.json``).
        prefix_tokens: token ids inserted after ``<s>`` (UniXcoder's ``<encoder-only>`` mode).
        meta: more ``kdkit.json`` fields (``labels``...); ``family`` there overrides the family
            recorded in :class:`ModelInfo` (default: the config's ``model_type``).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str,
        component: ComponentRef,
        prefix_tokens: Sequence[int] = (),
        meta: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not getattr(tokenizer, "is_fast", False):
            raise KdkitError(
                f"the tokenizer of {name} is not a fast tokenizer, so it has no character offsets",
                where=name,
                fix="save the model with a tokenizer.json (AutoTokenizer.from_pretrained(..., "
                "use_fast=True).save_pretrained(DIR))",
            )
        self.model = model
        self.tokenizer = tokenizer
        self.component = component
        self.prefix_tokens = tuple(prefix_tokens)
        meta = dict(meta or {})
        family = meta.pop("family", None) or str(getattr(model.config, "model_type", "hf"))
        self.meta = meta
        cfg = model.config
        layers = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "num_layers", 0)
        hidden = getattr(cfg, "hidden_size", None) or getattr(cfg, "d_model", 0)
        self._captured: torch.Tensor | None = None
        head = getattr(model, "classifier", None) or getattr(model, "classification_head", None)
        if head is not None:  # read the exact feature the head consumes (RKD, contrastive)
            head.register_forward_pre_hook(self._capture)
        self.info = ModelInfo(name, family, int(layers), int(hidden), count_parameters(model))
        #: parameters the checkpoint did not provide (randomly initialised) when loaded from a
        #: directory: ``from_pretrained``'s load report (missing and mismatched keys).
        self.not_loaded: tuple[str, ...] = ()

    def _capture(self, module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
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
        out = self.model(
            input_ids=encoded.input_ids,
            attention_mask=encoded.attention_mask,
            output_hidden_states=want_states,
            **encoded.extra,
        )
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

    def export_module(self) -> torch.nn.Module:
        """The classifier as ``(input_ids, attention_mask[, token_type_ids]) -> logits [B, C]``.

        What :mod:`kdkit.export.onnx` traces; ``input_names`` says which inputs it takes (BERT
        tokenizers give ``token_type_ids`` too, RoBERTa ones do not).
        """
        names = ["input_ids", "attention_mask"]
        if "token_type_ids" in getattr(self.tokenizer, "model_input_names", ()):
            names.append("token_type_ids")
        return LogitsOnly(self.model, tuple(names))

    def save(self, directory: str) -> None:
        """``save_pretrained`` the model (safetensors) and tokenizer, plus ``kdkit.json``."""
        os.makedirs(directory, exist_ok=True)
        quiet_transformers()
        apply_label_names(self.model.config, self.meta.get("labels"))
        self.model.save_pretrained(directory, safe_serialization=True)
        self.tokenizer.save_pretrained(directory)
        write_model_meta(
            directory,
            self.component,
            {
                "name": self.info.name,
                "family": self.info.family,
                "prefix_tokens": list(self.prefix_tokens),
                **self.meta,
            },
        )


class LogitsOnly(torch.nn.Module):
    """A ``transformers`` classifier called with named tensors, returning only its logits."""

    def __init__(self, model: Any, input_names: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.input_names = input_names

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``[B, L]`` int64 inputs (``input_names``' order) -> ``[B, C]`` logits."""
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits


def apply_label_names(config: Any, labels: Sequence[str] | None) -> None:
    """Write the task's real label names into a ``transformers`` config (``id2label``/``label2id``).

    So that ``pipeline("text-classification", model=DIR)`` prints ``ValueError``, not ``LABEL_3``.
    """
    maps = label_maps(labels, int(config.num_labels))
    if maps is not None:
        config.id2label = maps["id2label"]
        config.label2id = maps["label2id"]


def load_hf_classifier(
    directory: str,
    component: ComponentRef,
    *,
    num_labels: int | None = None,
    name: str | None = None,
    local_files_only: bool = True,
) -> HFClassifier:
    """Load a classifier (a directory, or a hub id when ``local_files_only`` is False).

    Args:
        directory: the model directory (or hub id).
        component: who reloads it, unless its ``kdkit.json`` names a component already.
        num_labels: give it a new head with this many classes (``None``: keep the saved head).
        name: its readable name (default: the one in ``kdkit.json``, else ``directory``).
        local_files_only: never download.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    quiet_transformers()
    meta = read_model_meta(directory) if os.path.isdir(directory) else {}
    kwargs: dict[str, Any] = {"local_files_only": local_files_only}
    if num_labels is not None:
        kwargs.update(num_labels=num_labels, ignore_mismatched_sizes=True)
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=local_files_only)
    # the load report says which weights the checkpoint did NOT have (initialised at random)
    model, info = AutoModelForSequenceClassification.from_pretrained(
        directory, output_loading_info=True, **kwargs
    )
    extra = model_fields(meta, "name", "prefix_tokens")
    clf = HFClassifier(
        model,
        tokenizer,
        name=name or meta.get("name") or str(directory),
        component=saved_component(meta) or component,
        prefix_tokens=meta.get("prefix_tokens", ()),
        meta=extra,
    )
    clf.not_loaded = tuple(
        sorted({*info.get("missing_keys", ()), *(_key(k) for k in info.get("mismatched_keys", ()))})
    )
    return clf


def _key(entry: Any) -> str:
    """A parameter name from a ``mismatched_keys`` entry (a name, or ``(name, shape, shape)``)."""
    return str(entry[0]) if isinstance(entry, (tuple, list)) else str(entry)


@dataclass(frozen=True)
class RobertaShape:
    """Dimensions of a from-scratch RoBERTa classifier (FFN width ``intermediate``)."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    dropout: float = 0.1


def build_roberta(tokenizer: Any, num_labels: int, shape: RobertaShape, max_length: int) -> Any:
    """A randomly initialised ``RobertaForSequenceClassification`` for ``tokenizer``."""
    from transformers import RobertaForSequenceClassification

    return RobertaForSequenceClassification(
        roberta_config(tokenizer, shape, max_length, num_labels=num_labels)
    )


def roberta_config(
    tokenizer: Any, shape: RobertaShape, max_length: int, *, num_labels: int = 2
) -> Any:
    """The ``RobertaConfig`` of a from-scratch encoder for ``tokenizer`` (position table of at
    least 514 entries, so fine-tuning may use up to 512 tokens); shared with MLM pre-training."""
    from transformers import RobertaConfig

    return RobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.intermediate,
        hidden_dropout_prob=shape.dropout,
        attention_probs_dropout_prob=shape.dropout,
        max_position_embeddings=max(514, max_length + 2),
        type_vocab_size=1,
        num_labels=num_labels,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
