"""Built-in student ``transformer``: a RoBERTa-style encoder trained from scratch.

It is ``transformers``' ``RobertaForSequenceClassification`` (head on ``<s>``) with a byte-level
BPE vocabulary trained on the task's training code, so a saved student loads with
``AutoModelForSequenceClassification.from_pretrained(DIR)``. Sizes follow the study's budgets;
depths divide 12 so student layers map evenly onto a 12-layer teacher.
"""

from __future__ import annotations

from pydantic import Field

from kdkit.api import BuildContext, Options
from kdkit.engine.tokenization import default_cache_dir, train_bpe_tokenizer
from kdkit.errors import KdkitError
from kdkit.hookspecs import Register, hookimpl
from kdkit.models import ComponentRef, count_parameters
from kdkit.plugins.models.corpus import training_texts
from kdkit.plugins.models.hf_classifier import (
    HFClassifier,
    RobertaShape,
    build_roberta,
    load_hf_classifier,
)

#: This plugin's component: what saved models record in kdkit.json.
COMPONENT = ComponentRef("student", "transformer")

#: size -> (vocab, hidden, layers, heads); exact parameter counts (2 classes) are in docs/models.md.
SIZES: dict[str, tuple[int, int, int, int]] = {
    "0.06M": (1000, 32, 1, 1),  # offline-study sizes (CPU budget); not in the study
    "0.25M": (1800, 64, 2, 2),
    "0.6M": (1000, 96, 4, 3),
    "1.5M": (2000, 128, 6, 4),
    "7M": (5000, 320, 4, 5),
    "30M": (20000, 512, 6, 8),
    "122M": (50000, 768, 12, 12),
}


class TransformerOptions(Options):
    """Options of the ``transformer`` student (a preset size, each dimension overridable)."""

    size: str = Field("1.5M", description=f"preset: one of {', '.join(SIZES)}")
    vocab_size: int | None = Field(
        None, ge=16, description="BPE vocabulary (default: the preset's)"
    )
    hidden_size: int | None = Field(None, ge=8, description="width (default: the preset's)")
    num_layers: int | None = Field(None, ge=1, description="depth (default: the preset's)")
    num_heads: int | None = Field(None, ge=1, description="attention heads (default: the preset's)")
    intermediate_size: int | None = Field(None, ge=8, description="FFN width (default: 4 x hidden)")
    dropout: float = Field(0.1, ge=0, lt=1)


def resolve_dims(options: TransformerOptions) -> tuple[int, int, int, int, int]:
    """(vocab, hidden, layers, heads, intermediate) after applying overrides to the preset."""
    if options.size not in SIZES:
        raise KdkitError(
            f"unknown transformer size {options.size!r}",
            where="student.size",
            fix=f"use one of {', '.join(SIZES)} or set the dimensions",
        )
    v, h, n_layers, a = SIZES[options.size]
    v = options.vocab_size or v
    h = options.hidden_size or h
    n_layers = options.num_layers or n_layers
    a = options.num_heads or a
    if h % a:
        raise KdkitError(
            f"hidden_size {h} is not divisible by num_heads {a}",
            where="student",
            fix="choose num_heads dividing hidden_size",
        )
    return v, h, n_layers, a, options.intermediate_size or 4 * h


def preset_parameter_count(size: str, num_labels: int = 2, max_length: int = 512) -> int:
    """Exact parameter count of a preset size with its full vocabulary (built on ``meta``)."""
    import torch
    from transformers import RobertaConfig, RobertaForSequenceClassification

    v, h, l, a = SIZES[size]  # noqa: E741
    config = RobertaConfig(
        vocab_size=v,
        hidden_size=h,
        num_hidden_layers=l,
        num_attention_heads=a,
        intermediate_size=4 * h,
        max_position_embeddings=max(514, max_length + 2),
        type_vocab_size=1,
        num_labels=num_labels,
    )
    with torch.device("meta"):
        return count_parameters(RobertaForSequenceClassification(config))


def build_transformer_student(options: TransformerOptions, context: BuildContext) -> HFClassifier:
    """Train (or load from cache) the BPE tokenizer on the training split; build the model."""
    if context.splits is None or context.task is None:
        raise KdkitError(
            "the transformer student needs the task's data to train its tokenizer",
            fix="build it through a run (the engine loads the task first)",
        )
    vocab, hidden, layers, heads, inter = resolve_dims(options)
    cache = default_cache_dir(context.cache_dir)
    tokenizer = train_bpe_tokenizer(
        training_texts(context.splits), vocab, cache, context.task.fingerprint()
    )
    shape = RobertaShape(hidden, layers, heads, inter, options.dropout)
    model = build_roberta(tokenizer, len(context.task.labels), shape, context.max_length)
    custom = any(
        v is not None
        for v in (
            options.vocab_size,
            options.hidden_size,
            options.num_layers,
            options.num_heads,
            options.intermediate_size,
        )
    )
    name = f"transformer-{options.size}"
    if custom:  # the preset's name would be a lie: name it by its real size
        name = f"transformer-{hidden}x{layers}-{count_parameters(model) / 1e6:.2f}M"
    meta = {"family": "transformer", "labels": list(context.task.labels)}
    return HFClassifier(model, tokenizer, name=name, component=COMPONENT, meta=meta)


def load_transformer_student(directory: str) -> HFClassifier:
    """Reload a student written by :meth:`HFClassifier.save` (``save_pretrained`` format)."""
    return load_hf_classifier(directory, COMPONENT)


@hookimpl
def register_students(register: Register) -> None:
    """Register ``transformer``."""
    register(
        "transformer",
        build_transformer_student,
        config=TransformerOptions,
        description="RoBERTa-style encoder from scratch with its own BPE (study sizes)",
        load=load_transformer_student,
    )
