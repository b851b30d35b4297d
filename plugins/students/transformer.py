"""Built-in student ``transformer``: a RoBERTa-style encoder trained from scratch.

It is ``transformers``' ``RobertaForSequenceClassification`` (head on ``<s>``) with a byte-level
BPE vocabulary trained on the task's training code, so a saved student loads with
``AutoModelForSequenceClassification.from_pretrained(DIR)``. Sizes follow the study's budgets;
depths divide 12 so student layers map evenly onto a 12-layer teacher.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from kdkit.api import BuildContext, Options
from kdkit.engine.hf_model import HFClassifier, count_parameters
from kdkit.engine.tokenization import default_cache_dir, train_bpe_tokenizer
from kdkit.hookspecs import hookimpl

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
    from kdkit.errors import KdkitError

    if options.size not in SIZES:
        raise KdkitError(f"unknown transformer size {options.size!r}", where="student.size",
                         fix=f"use one of {', '.join(SIZES)} or set the dimensions")  # fmt: skip
    v, h, n_layers, a = SIZES[options.size]
    v = options.vocab_size or v
    h = options.hidden_size or h
    n_layers = options.num_layers or n_layers
    a = options.num_heads or a
    if h % a:
        raise KdkitError(f"hidden_size {h} is not divisible by num_heads {a}",
                         where="student", fix="choose num_heads dividing hidden_size")  # fmt: skip
    return v, h, n_layers, a, options.intermediate_size or 4 * h


def training_texts(splits: Any) -> list[str]:
    """Every code text of the training split (both halves of pairs) for tokenizer training."""
    train = splits["train"]
    texts = list(train["text"])
    if "text_pair" in train.column_names:
        texts += list(train["text_pair"])
    return texts


def build_roberta(tokenizer, num_labels: int, hidden: int, layers: int, heads: int,
                  intermediate: int, dropout: float, max_length: int):  # fmt: skip
    """A randomly initialised ``RobertaForSequenceClassification`` for ``tokenizer``."""
    from transformers import RobertaConfig, RobertaForSequenceClassification

    config = RobertaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, intermediate_size=intermediate,
        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
        max_position_embeddings=max(514, max_length + 2), type_vocab_size=1,
        num_labels=num_labels, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    return RobertaForSequenceClassification(config)


def preset_parameter_count(size: str, num_labels: int = 2, max_length: int = 512) -> int:
    """Exact parameter count of a preset size with its full vocabulary (built on ``meta``)."""
    import torch
    from transformers import RobertaConfig, RobertaForSequenceClassification

    from kdkit.engine.hf_model import count_parameters

    v, h, l, a = SIZES[size]  # noqa: E741
    config = RobertaConfig(vocab_size=v, hidden_size=h, num_hidden_layers=l, num_attention_heads=a,
                           intermediate_size=4 * h, max_position_embeddings=max(514, max_length + 2),
                           type_vocab_size=1, num_labels=num_labels)  # fmt: skip
    with torch.device("meta"):
        return count_parameters(RobertaForSequenceClassification(config))


def build_transformer_student(options: TransformerOptions, context: BuildContext) -> HFClassifier:
    """Train (or load from cache) the BPE tokenizer on the training split; build the model."""
    from kdkit.errors import KdkitError

    if context.splits is None or context.task is None:
        raise KdkitError("the transformer student needs the task's data to train its tokenizer",
                         fix="build it through a run (the engine loads the task first)")  # fmt: skip
    vocab, hidden, layers, heads, inter = resolve_dims(options)
    cache = default_cache_dir(context.cache_dir)
    tokenizer = train_bpe_tokenizer(training_texts(context.splits), vocab, cache,
                                    context.task.fingerprint())  # fmt: skip
    model = build_roberta(tokenizer, len(context.task.labels), hidden, layers, heads, inter,
                          options.dropout, context.max_length)  # fmt: skip
    custom = any(v is not None for v in (options.vocab_size, options.hidden_size,
                                          options.num_layers, options.num_heads,
                                          options.intermediate_size))  # fmt: skip
    name = f"transformer-{options.size}"
    if custom:  # the preset's name would be a lie: name it by its real size
        name = f"transformer-{hidden}x{layers}-{count_parameters(model) / 1e6:.2f}M"
    student = HFClassifier(model, tokenizer, name=name,
                           family="transformer", meta={"labels": list(context.task.labels)})  # fmt: skip
    return student


@hookimpl
def register_students(register):
    register("transformer", build_transformer_student, config=TransformerOptions,
             description="RoBERTa-style encoder from scratch with its own BPE (study sizes)")  # fmt: skip
