"""kdkit.integrations.transformers.DistillationTrainer on tiny HF models on CPU: its loss is the
kdkit method's on the same outputs (and Hinton's formula by hand), the student and the method's
own modules train, the teacher does not; any registered method (a third party's too) works and
bad names/options are clear errors."""

from __future__ import annotations

import math

import datasets
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("accelerate")  # transformers.Trainer needs it (extra kdkit[hf-trainer], dev)

from transformers import (
    BertConfig,
    BertForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
    TrainingArguments,
)

from kdkit.api import Batch, Encoded, KDMethod, ModelOutput, Needs, Options, Requirements
from kdkit.discovery import load_plugins
from kdkit.errors import KdkitError, PluginError
from kdkit.hookspecs import hookimpl
from kdkit.integrations.transformers import DistillationTrainer

VOCAB, LENGTH, ROWS = 64, 12, 16


def student_model(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=2,
    )
    return BertForSequenceClassification(config)


def teacher_model(seed: int = 1) -> RobertaForSequenceClassification:
    torch.manual_seed(seed)
    config = RobertaConfig(
        vocab_size=VOCAB,
        hidden_size=24,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=48,
        max_position_embeddings=40,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=2,
        pad_token_id=1,
    )
    return RobertaForSequenceClassification(config)


def tiny_dataset() -> datasets.Dataset:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, VOCAB, (ROWS, LENGTH), generator=g)
    return datasets.Dataset.from_dict(
        {
            "input_ids": ids.tolist(),
            "attention_mask": torch.ones_like(ids).tolist(),
            "labels": (ids.sum(1) % 2).tolist(),
        }
    )


def trainer_for(tmp_path, method: str, options=None, *, teacher=None, plugins=None, steps=3):
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=steps,
        per_device_train_batch_size=4,
        learning_rate=5e-3,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_steps=1,
        seed=0,
        disable_tqdm=True,
    )
    return DistillationTrainer(
        model=student_model(),
        teacher=teacher or teacher_model(),
        method=method,
        method_options=options,
        plugins=plugins,
        args=args,
        train_dataset=tiny_dataset(),
    )


def one_batch() -> dict[str, torch.Tensor]:
    ds = tiny_dataset()[:4]
    return {k: torch.tensor(v) for k, v in ds.items()}


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_kd_loss_is_the_method_loss_and_hintons_formula(tmp_path):
    trainer = trainer_for(tmp_path, "kd", {"temperature": 2.0, "alpha": 0.7})
    batch = one_batch()
    loss = trainer.compute_loss(trainer.model, batch)
    with torch.no_grad():
        zs = trainer.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits
        zt = trainer.teacher(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits
    # the registered method itself, on the same outputs
    n = len(zs)
    enc = Encoded(batch["input_ids"], batch["attention_mask"], torch.zeros(n, LENGTH, 2))
    terms = trainer.kd_method(
        ModelOutput(zs),
        ModelOutput(zt),
        Batch([""] * n, batch["labels"], torch.arange(n), enc, enc),
    )
    assert float(loss) == pytest.approx(float(sum(terms.values())), rel=1e-6)
    # and Hinton's form by hand: alpha*T^2*KL(p_t^T || p_s^T) + (1-alpha)*CE
    T, a = 2.0, 0.7
    kl = F.kl_div(
        F.log_softmax(zs / T, -1), F.log_softmax(zt / T, -1), log_target=True, reduction="batchmean"
    )
    by_hand = a * T * T * kl + (1 - a) * F.cross_entropy(zs, batch["labels"])
    assert float(loss) == pytest.approx(float(by_hand), rel=1e-5)


def test_training_moves_the_student_and_never_the_teacher(tmp_path):
    trainer = trainer_for(tmp_path, "kd", {"temperature": 2.0})
    student0, teacher0 = snapshot(trainer.model), snapshot(trainer.teacher)
    result = trainer.train()
    assert result.global_step == 3 and math.isfinite(result.training_loss)
    changed = [k for k, v in trainer.model.state_dict().items() if not torch.equal(v, student0[k])]
    assert any("encoder.layer.0" in k for k in changed) and any("classifier" in k for k in changed)
    assert all(torch.equal(v, teacher0[k]) for k, v in trainer.teacher.state_dict().items())
    assert all(not p.requires_grad for p in trainer.teacher.parameters())
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == 3 and {"kd/kd", "kd/ce"} <= set(logged[0])
    assert logged[0]["loss"] == pytest.approx(logged[0]["kd/kd"] + logged[0]["kd/ce"], rel=1e-3)


def test_a_method_with_its_own_modules_trains_them(tmp_path):
    trainer = trainer_for(tmp_path, "fitnets", {"hint_weight": 1.0, "layers": "uniform"})
    assert len(trainer.kd_method.regressors) == 2  # student layers 1..2 -> teacher layers
    assert trainer.kd_method.regressors[0].in_features == 16
    assert trainer.kd_method.regressors[0].out_features == 24
    before = snapshot(trainer.kd_method)
    trainer.train()
    assert any(not torch.equal(v, before[k]) for k, v in trainer.kd_method.state_dict().items())
    assert "kd/hint" in trainer.state.log_history[0]


class L1Options(Options):
    weight: float = 1.0


class LogitL1(KDMethod):
    """A third party's method: weight * mean |z_s - z_t|."""

    requirements = Requirements(Needs(), Needs())

    def __init__(self, options, context):
        super().__init__()
        self.options = options

    def forward(self, student, teacher, batch):
        return {"l1": self.options.weight * (student.logits - teacher.logits).abs().mean()}


class ThirdParty:
    @hookimpl
    def register_kd_methods(self, register):
        register("logit-l1", LogitL1, config=L1Options, description="mean |z_s - z_t|")


def test_a_third_party_method_from_the_registry(tmp_path):
    plugins = load_plugins(distributions={"kdkit"}, extra=[("logit-l1-plugin", ThirdParty())])
    trainer = trainer_for(tmp_path, "logit-l1", {"weight": 3.0}, plugins=plugins)
    batch = one_batch()
    with torch.no_grad():
        zs = trainer.model(input_ids=batch["input_ids"]).logits
        zt = trainer.teacher(input_ids=batch["input_ids"]).logits
        loss = trainer.compute_loss(trainer.model, batch)
    assert float(loss) == pytest.approx(float(3.0 * (zs - zt).abs().mean()), rel=1e-6)


def test_unknown_methods_and_bad_options_are_clear_errors(tmp_path):
    with pytest.raises(PluginError, match="did you mean 'kd'"):
        trainer_for(tmp_path, "kdd")
    with pytest.raises(KdkitError) as err:
        trainer_for(tmp_path, "kd", {"temprature": 2})
    assert "temprature" in err.value.what and "temperature" in err.value.fix
    with pytest.raises(KdkitError) as err:
        trainer_for(tmp_path, "kd", {"temperature": -1})
    assert "greater than 0" in err.value.what
