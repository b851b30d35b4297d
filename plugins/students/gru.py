"""Built-in student ``gru``: embedding -> multi-layer bidirectional GRU -> head.

The head reads ``[forward last state ‖ backward first state]`` of the top layer. On CPU a layer's
two directions run as one recurrence over the right-padded batch, the backward one over each row
reversed within its length (``bigru_recurrence.py``); on GPU ``nn.GRU`` runs on packed sequences.
Either way no real position sees padding, so a row's result does not depend on how much padding
its batch has. Each BiGRU layer is its own ``nn.GRU`` so that every
layer's output sequence and final states are available to feature methods (PKD, CKD, FitNets).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import torch
from pydantic import Field
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from kdkit.api import (
    BuildContext,
    Encoded,
    Example,
    ModelInfo,
    ModelOutput,
    Needs,
    Options,
    Student,
)
from kdkit.engine.tokenization import default_cache_dir, encode_examples, train_bpe_tokenizer
from kdkit.errors import KdkitError
from kdkit.hookspecs import Register, hookimpl
from kdkit.models import (
    ComponentRef,
    count_parameters,
    label_maps,
    model_fields,
    read_model_meta,
    write_model_meta,
)
from kdkit.plugins.models.corpus import training_texts
from kdkit.plugins.students.bigru_recurrence import bigru_layer, reversal_index

#: This plugin's component: what saved models record in kdkit.json.
COMPONENT = ComponentRef("student", "gru")

#: The study's GRU sizes: name -> (vocab, hidden per direction, layers).
SIZES: dict[str, tuple[int, int, int]] = {
    "0.06M": (1000, 36, 1),  # offline-study sizes (CPU budget); not in the study
    "0.25M": (1800, 80, 1),
    "0.6M": (1000, 112, 2),
    "1.5M": (2000, 176, 2),
    "7M": (5000, 320, 3),
    "30M": (20000, 448, 6),
    "122M": (50000, 768, 8),
}


class GRUOptions(Options):
    """Options of the ``gru`` student (a preset size, each dimension overridable)."""

    size: str = Field("1.5M", description=f"preset: one of {', '.join(SIZES)}")
    vocab_size: int | None = Field(
        None, ge=16, description="BPE vocabulary (default: the preset's)"
    )
    hidden_size: int | None = Field(None, ge=4, description="per direction (default: the preset's)")
    num_layers: int | None = Field(None, ge=1, description="BiGRU layers (default: the preset's)")
    dropout: float = Field(0.1, ge=0, lt=1)


class BiGRUClassifier(nn.Module):
    """The network: ``[B, L]`` ids -> per-layer ``[B, L, 2H]`` states -> ``[B, C]`` logits."""

    def __init__(
        self,
        vocab_size: int,
        hidden: int,
        layers: int,
        num_labels: int,
        dropout: float,
        pad_id: int,
    ) -> None:
        super().__init__()
        self.config = {
            "vocab_size": vocab_size,
            "hidden_size": hidden,
            "num_layers": layers,
            "num_labels": num_labels,
            "dropout": dropout,
            "pad_id": pad_id,
        }
        self.embed = nn.Embedding(vocab_size, hidden, padding_idx=pad_id)
        self.layers = nn.ModuleList(
            nn.GRU(hidden if i == 0 else 2 * hidden, hidden, batch_first=True, bidirectional=True)
            for i in range(layers)
        )
        self.drop = nn.Dropout(dropout)
        self.dense = nn.Linear(2 * hidden, 2 * hidden)
        self.out = nn.Linear(2 * hidden, num_labels)

    def run(self, ids: torch.Tensor, mask: torch.Tensor, needs: Needs) -> ModelOutput:
        """Forward over right-padded rows; returns what ``needs`` asks (layer 0 = embeddings).

        On CPU both directions of a layer run as one recurrence over the padded batch
        (:mod:`.bigru_recurrence`: ~2x faster than packed ``nn.GRU`` there, same weights, same
        results); on other devices ``nn.GRU`` on packed sequences (cuDNN). Either way no
        position before a row's end sees padding, so a row's outputs do not depend on its batch.
        """
        lengths = mask.sum(1).clamp(min=1)  # [B]; an empty row still runs one step
        width = ids.shape[1]
        packed_path = ids.device.type != "cpu"
        rev, valid = reversal_index(lengths, width)
        x = self.drop(self.embed(ids))  # [B, L, H]
        hidden: dict[int, torch.Tensor] = {}
        pooled: dict[int, torch.Tensor] = {}
        if 0 in needs.hidden_layers:
            hidden[0] = x
        if 0 in needs.pooled_layers:  # mean of real embeddings [B, H]
            m = mask.unsqueeze(-1).to(x.dtype)
            pooled[0] = (x * m).sum(1) / m.sum(1).clamp(min=1)
        final = None
        for i, gru in enumerate(self.layers, start=1):
            if packed_path:
                packed = pack_padded_sequence(
                    x, lengths.cpu(), batch_first=True, enforce_sorted=False
                )
                seq, h_n = gru(packed)  # h_n [2, B, H]: forward at the last token, backward first
                x, _ = pad_packed_sequence(seq, batch_first=True, total_length=width)
                final = torch.cat([h_n[0], h_n[1]], dim=-1)  # [B, 2H]
            else:
                x, final = bigru_layer(gru, x, rev, lengths)  # [B, L, 2H], [B, 2H]
                x = x * valid.unsqueeze(-1).to(x.dtype)  # padding zeroed, as pad_packed leaves it
            if i in needs.hidden_layers:
                hidden[i] = x
            if i in needs.pooled_layers:
                pooled[i] = final
            if i < len(self.layers):
                x = self.drop(x)
        assert final is not None
        feature = self.drop(torch.tanh(self.dense(self.drop(final))))
        return ModelOutput(
            logits=self.out(feature),
            hidden_states=hidden,
            pooled=pooled,
            embedding=final if needs.embedding else None,
        )


class PaddedBiGRU(nn.Module):
    """The same network on padded input + mask, without packing: what ONNX export traces.

    ``pack_padded_sequence`` has no ONNX form, so each bidirectional layer runs as two
    one-directional GRUs with the layer's own weights: the forward one on the padded rows (a
    position before a row's end never sees its padding), the backward one on each row reversed
    WITHIN its length (a gather), so it starts at the row's last real token like the packed one.
    Padding positions are zeroed between layers as ``pad_packed_sequence`` leaves them. In
    ``eval()`` the logits equal :meth:`BiGRUClassifier.run`'s (tests/export/test_onnx.py).
    """

    input_names = ("input_ids", "attention_mask")
    #: the tracing exporter: exact here (no data-dependent Python control flow), and fast
    onnx_exporter = "torchscript"

    def __init__(self, network: BiGRUClassifier) -> None:
        super().__init__()
        self.embed, self.dense, self.out = network.embed, network.dense, network.out
        self.forward_layers = nn.ModuleList()
        self.backward_layers = nn.ModuleList()
        for gru in network.layers:
            fwd = nn.GRU(gru.input_size, gru.hidden_size, batch_first=True)
            bwd = nn.GRU(gru.input_size, gru.hidden_size, batch_first=True)
            with torch.no_grad():
                for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
                    getattr(fwd, name).copy_(getattr(gru, name))
                    getattr(bwd, name).copy_(getattr(gru, f"{name}_reverse"))
            self.forward_layers.append(fwd)
            self.backward_layers.append(bwd)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` ids and mask (right-padded) -> ``[B, C]`` logits."""
        lengths = attention_mask.sum(1).clamp(min=1)  # [B]; an empty row runs one step, as packed
        pos = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)  # [1, L]
        valid = pos < lengths.unsqueeze(1)  # [B, L]
        # position t <-> length-1-t inside each row; padding positions map to themselves
        rev = torch.where(valid, lengths.unsqueeze(1) - 1 - pos, pos)  # [B, L]
        last = (lengths - 1).view(-1, 1, 1)  # [B, 1, 1]
        x = self.embed(input_ids)  # [B, L, H]
        final = x[:, 0]
        for fwd, bwd in zip(self.forward_layers, self.backward_layers):
            index = rev.unsqueeze(-1).expand(-1, -1, x.shape[-1])
            f, _ = fwd(x)  # [B, L, H]
            b_rev, _ = bwd(x.gather(1, index))  # [B, L, H], row-reversed time
            b = b_rev.gather(1, rev.unsqueeze(-1).expand(-1, -1, b_rev.shape[-1]))
            # final states: forward at the last real token, backward at the first
            f_last = f.gather(1, last.expand(-1, 1, f.shape[-1])).squeeze(1)  # [B, H]
            final = torch.cat([f_last, b[:, 0]], dim=-1)  # [B, 2H]
            x = torch.cat([f, b], dim=-1) * valid.unsqueeze(-1).to(f.dtype)  # [B, L, 2H]
        return self.out(torch.tanh(self.dense(final)))


class GRUStudent(Student):
    """The ``gru`` student: :class:`BiGRUClassifier` plus its BPE tokenizer."""

    def __init__(
        self,
        network: BiGRUClassifier,
        tokenizer: Any,
        *,
        name: str,
        meta: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.network = network
        self.tokenizer = tokenizer
        self.meta = dict(meta or {})
        cfg = network.config
        self.info = ModelInfo(
            name, "gru", cfg["num_layers"], 2 * cfg["hidden_size"], count_parameters(network)
        )

    def encode(self, examples: Sequence[Example], max_length: int) -> Encoded:
        """Tokenise with the student's BPE (offsets into the joined text)."""
        return encode_examples(self.tokenizer, examples, max_length)

    def forward(self, encoded: Encoded, needs: Needs) -> ModelOutput:  # type: ignore[override]
        """Run the BiGRU (see :meth:`BiGRUClassifier.run`)."""
        out = self.network.run(encoded.input_ids, encoded.attention_mask, needs)
        out.attention_mask = encoded.attention_mask
        out.offsets = encoded.offsets
        return out

    def export_module(self) -> nn.Module:
        """:class:`PaddedBiGRU` over this student's weights (ONNX export: no packed sequences)."""
        return PaddedBiGRU(self.network).eval()

    def save(self, directory: str) -> None:
        """Weights (``model.safetensors``), ``config.json``, tokenizer and ``kdkit.json``."""
        from safetensors.torch import save_file

        os.makedirs(directory, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.network.state_dict().items()}
        save_file(state, os.path.join(directory, "model.safetensors"))
        config = dict(self.network.config)
        # the task's real label names, as transformers configs carry them (exporters read them)
        config.update(label_maps(self.meta.get("labels"), config["num_labels"]) or {})
        with open(os.path.join(directory, "config.json"), "w", encoding="utf-8") as fh:
            json.dump(config, fh, indent=2)
        self.tokenizer.save_pretrained(directory)
        write_model_meta(
            directory, COMPONENT, {"name": self.info.name, "family": "gru", **self.meta}
        )


def load_gru_student(directory: str) -> GRUStudent:
    """Reload a student written by :meth:`GRUStudent.save`."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    with open(os.path.join(directory, "config.json"), encoding="utf-8") as fh:
        cfg = json.load(fh)
    meta = read_model_meta(directory)
    network = BiGRUClassifier(
        cfg["vocab_size"],
        cfg["hidden_size"],
        cfg["num_layers"],
        cfg["num_labels"],
        cfg["dropout"],
        cfg["pad_id"],
    )
    network.load_state_dict(load_file(os.path.join(directory, "model.safetensors")))
    tokenizer = AutoTokenizer.from_pretrained(directory)
    extra = model_fields(meta, "name", "family")
    return GRUStudent(network, tokenizer, name=meta.get("name", "gru"), meta=extra)


def preset_parameter_count(size: str, num_labels: int = 2) -> int:
    """Exact parameter count of a preset size with its full vocabulary (built on ``meta``)."""
    v, h, l = SIZES[size]  # noqa: E741
    with torch.device("meta"):
        return count_parameters(BiGRUClassifier(v, h, l, num_labels, 0.0, 1))


def build_gru_student(options: GRUOptions, context: BuildContext) -> GRUStudent:
    """Train (or load from cache) the BPE tokenizer on the training split; build the network."""
    if options.size not in SIZES:
        raise KdkitError(
            f"unknown gru size {options.size!r}",
            where="student.size",
            fix=f"use one of {', '.join(SIZES)} or set the dimensions",
        )
    if context.splits is None or context.task is None:
        raise KdkitError(
            "the gru student needs the task's data to train its tokenizer",
            fix="build it through a run (the engine loads the task first)",
        )
    v, h, n_layers = SIZES[options.size]
    v, h, n_layers = (
        options.vocab_size or v,
        options.hidden_size or h,
        options.num_layers or n_layers,
    )
    tokenizer = train_bpe_tokenizer(
        training_texts(context.splits),
        v,
        default_cache_dir(context.cache_dir),
        context.task.fingerprint(),
    )
    network = BiGRUClassifier(
        len(tokenizer),
        h,
        n_layers,
        len(context.task.labels),
        options.dropout,
        tokenizer.pad_token_id,
    )
    name = f"gru-{options.size}"
    if any(v is not None for v in (options.vocab_size, options.hidden_size, options.num_layers)):
        name = f"gru-{h}x{n_layers}-{count_parameters(network) / 1e6:.2f}M"  # not the preset
    return GRUStudent(network, tokenizer, name=name, meta={"labels": list(context.task.labels)})


@hookimpl
def register_students(register: Register) -> None:
    """Register ``gru``."""
    register(
        "gru",
        build_gru_student,
        config=GRUOptions,
        description="bidirectional GRU with its own BPE (study sizes)",
        load=load_gru_student,
    )
