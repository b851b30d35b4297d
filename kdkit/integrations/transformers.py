"""Distil inside a ``transformers.Trainer`` script with any registered kdkit KD method.

Keep your Trainer script; swap ``Trainer`` for :class:`DistillationTrainer` and give it a teacher
and a method::

    trainer = DistillationTrainer(
        model=student, teacher=teacher, method="kd", method_options={"temperature": 2.0},
        args=args, train_dataset=train, eval_dataset=dev,
    )
    trainer.train()

The method is looked up in kdkit's registry (built-in or a third-party plugin installed with
pip), its options are validated by its options model, and each batch's loss is the sum of the
loss terms the method returns — computed by the method's own code, which calls
``kdkit.kernels`` (fused Triton kernels on GPU, PyTorch references on CPU). Methods with their
own trainable modules (FitNets' regressors, ...) get them optimised with the student.

Both models see the same batch (one tokenizer): the student's outputs and the frozen teacher's
(``eval()``, ``torch.no_grad()``) become :class:`kdkit.api.ModelOutput`\\ s — logits; hidden
states of layer ``l`` = ``hidden_states[l]`` of the HF output (0 = embeddings); pooled feature
of a layer = its first token's state (``[CLS]``/``<s>``); ``embedding`` = the last layer's first
token state. Token offsets are the token positions (the two tokenisations are identical), so
token-level methods (CKD, FitNets ``features: tokens``) align token for token.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import torch
from pydantic import ValidationError
from torch import nn
from transformers import PreTrainedModel, Trainer

from kdkit.api import (
    IGNORE_INDEX,
    Batch,
    BuildContext,
    Encoded,
    KDMethod,
    ModelInfo,
    ModelOutput,
    Needs,
    Progress,
)
from kdkit.errors import KdkitError
from kdkit.models import count_parameters

#: Keys of a Trainer batch that are not model inputs of the teacher.
_NOT_INPUTS = ("labels", "label", "label_ids")


def model_info(model: nn.Module, name: str) -> ModelInfo:
    """kdkit's :class:`~kdkit.api.ModelInfo` of an HF model (from its ``config``)."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "num_hidden_layers"):
        raise KdkitError(
            f"the {name} has no transformers config with num_hidden_layers",
            where=name,
            fix="pass a transformers PreTrainedModel (e.g. "
            "AutoModelForSequenceClassification.from_pretrained(...))",
        )
    return ModelInfo(
        name=getattr(config, "_name_or_path", "") or type(model).__name__,
        family=getattr(config, "model_type", "") or "hf",
        num_layers=int(config.num_hidden_layers),
        hidden_size=int(config.hidden_size),
        num_parameters=count_parameters(model),
    )


def build_method(
    method: str, options: Mapping[str, Any] | None, context: BuildContext, plugins: Any = None
) -> KDMethod:
    """The registered KD method ``method`` built with validated ``options`` (unknown names and
    bad options are :class:`KdkitError`\\ s saying what the method accepts)."""
    from kdkit.discovery import load_plugins

    registry = (plugins or load_plugins()).registry
    component = registry.get("kd_method", method)  # PluginError with "did you mean"
    try:
        opts = component.config(**dict(options or {}))
    except ValidationError as exc:
        accepted = ", ".join(component.config.model_fields) or "no options"
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}" for e in exc.errors()
        )
        raise KdkitError(
            f"invalid options of method '{method}': {problems}",
            where="method_options",
            fix=f"'{method}' accepts: {accepted} (kdkit plugins --kind kd_method shows them)",
        ) from exc
    return component.build(opts, context)


def hf_output(outputs: Any, needs: Needs, attention_mask: torch.Tensor) -> ModelOutput:
    """A :class:`~kdkit.api.ModelOutput` of an HF classifier's output, with what ``needs`` asks."""
    states = outputs.hidden_states  # tuple of num_layers + 1 tensors [B, L, H]; 0 = embeddings
    wanted = set(needs.hidden_layers) | set(needs.pooled_layers)
    if (wanted or needs.embedding) and states is None:
        raise KdkitError(
            "the model returned no hidden states",
            where="DistillationTrainer",
            fix="use a transformers model that supports output_hidden_states",
        )
    B, L = attention_mask.shape
    pos = torch.arange(L, device=attention_mask.device)
    offsets = torch.stack([pos, pos + 1], -1).expand(B, L, 2)  # token i spans [i, i+1)
    return ModelOutput(
        logits=outputs.logits,
        hidden_states={layer: states[layer] for layer in needs.hidden_layers},
        pooled={layer: states[layer][:, 0] for layer in needs.pooled_layers},
        embedding=states[-1][:, 0] if needs.embedding else None,
        attention_mask=attention_mask,
        offsets=offsets,
    )


class DistillationTrainer(Trainer):
    """A ``transformers.Trainer`` whose loss is a kdkit KD method's (sum of its loss terms).

    Args:
        teacher: the frozen teacher (a transformers model over the same tokenizer and labels);
            ``None`` only for methods that need no teacher (``ft``).
        method: a registered KD method name (``kd``, ``kd-study``, ``fitnets``, ``pkd``, ``rkd``,
            ``ckd``, ``dist``, ``contrastive``, ``ft``, or a plugin's).
        method_options: the method's options (validated by its options model).
        plugins: a :func:`kdkit.discovery.load_plugins` result (default: every installed plugin).
        *args, **kwargs: everything ``transformers.Trainer`` takes (``model`` is the student).

    The loss terms of the last training batch are in :attr:`last_terms`; their running means
    are logged beside ``loss`` as ``kd/<term>`` at every logging step.
    """

    def __init__(
        self,
        *args: Any,
        teacher: PreTrainedModel | None = None,
        method: str = "kd",
        method_options: Mapping[str, Any] | None = None,
        plugins: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        assert isinstance(self.model, torch.nn.Module)  # Trainer requires a model here
        student_info = model_info(self.model, "student")
        teacher_info = model_info(teacher, "teacher") if teacher is not None else None
        context = BuildContext(
            device=self.args.device, seed=self.args.seed, teacher=teacher_info, student=student_info
        )
        self.kd_method = build_method(method, method_options, context, plugins)
        self.method_name = method
        if self.kd_method.requires_teacher and teacher is None:
            raise KdkitError(
                f"method '{method}' needs a teacher",
                where="DistillationTrainer",
                fix="pass teacher=..., or use method='ft'",
            )
        self.kd_method.to(self.args.device)
        self.teacher = teacher
        if teacher is not None:
            # transformers' .to() is typed through a decorator mypy cannot see through
            teacher.to(self.args.device).eval().requires_grad_(False)  # type: ignore[arg-type]
        self.last_terms: dict[str, float] = {}
        self._term_sums: dict[str, float] = {}
        self._term_count = 0

    # -- optimiser: the method's own modules train with the student ---------------------------

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """The Trainer's optimiser, plus a group for the method's trainable parameters."""
        optimizer = super().create_optimizer(*(() if model is None else (model,)))
        own = [p for p in self.kd_method.parameters() if p.requires_grad]
        known = {id(p) for g in optimizer.param_groups for p in g["params"]}
        if own and not known.issuperset(map(id, own)):
            optimizer.add_param_group({"params": own, "weight_decay": 0.0})
        return optimizer

    # -- the loss -------------------------------------------------------------------------------

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        """The sum of the KD method's loss terms on this batch (student and teacher outputs)."""
        labels = next((inputs[k] for k in _NOT_INPUTS if k in inputs), None)
        features = {k: v for k, v in inputs.items() if k not in _NOT_INPUTS}
        input_ids = features["input_ids"]  # [B, L]
        mask = features.get("attention_mask")
        mask = torch.ones_like(input_ids) if mask is None else mask
        req = self.kd_method.requirements
        s_needs = req.student
        want_states = bool(s_needs.hidden_layers or s_needs.pooled_layers or s_needs.embedding)
        s_raw = model(**features, output_hidden_states=want_states)
        student = hf_output(s_raw, s_needs, mask)
        teacher = None
        if req.teacher is not None and self.teacher is not None:
            t_needs = req.teacher
            t_states = bool(t_needs.hidden_layers or t_needs.pooled_layers or t_needs.embedding)
            with torch.no_grad():
                t_raw = self.teacher(**features, output_hidden_states=t_states)
            teacher = hf_output(t_raw, t_needs, mask)
            teacher = ModelOutput(
                logits=teacher.logits.detach(),
                hidden_states={k: v.detach() for k, v in teacher.hidden_states.items()},
                pooled={k: v.detach() for k, v in teacher.pooled.items()},
                embedding=None if teacher.embedding is None else teacher.embedding.detach(),
                attention_mask=mask,
                offsets=teacher.offsets,
            )
        B = input_ids.shape[0]
        if labels is None:
            labels = torch.full((B,), IGNORE_INDEX, dtype=torch.long, device=input_ids.device)
        # offsets may be None (no CKD-style alignment needed); Encoded carries it through as is
        encoded = Encoded(input_ids, mask, cast(torch.Tensor, student.offsets))
        state = self.state
        batch = Batch(
            texts=[""] * B,
            labels=labels.long(),
            index=torch.arange(B),
            student=encoded,
            teacher=encoded,
            split="train" if model.training else "validation",
            progress=Progress(
                step=state.global_step, total_steps=state.max_steps, epoch=int(state.epoch or 0)
            )
            if model.training
            else None,
        )
        terms = self.kd_method(student, teacher, batch)
        loss = sum(terms.values())
        if model.training:
            self.last_terms = {k: float(v.detach()) for k, v in terms.items()}
            for k, v in self.last_terms.items():
                self._term_sums[k] = self._term_sums.get(k, 0.0) + v
            self._term_count += 1
        return (loss, s_raw) if return_outputs else loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """The Trainer's logs, with ``kd/<term>`` means since the last training log."""
        if "loss" in logs and self._term_count:
            logs = {**logs, **{f"kd/{k}": v / self._term_count for k, v in self._term_sums.items()}}
            self._term_sums, self._term_count = {}, 0
        super().log(logs, *args, **kwargs)


__all__ = ["DistillationTrainer", "build_method", "hf_output", "model_info"]
