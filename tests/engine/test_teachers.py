"""Teachers: HF directory teacher conformance, UniXcoder prefix, offline messages, fingerprints."""

from __future__ import annotations

import pytest
import torch

from kdkit.api import Needs
from kdkit.errors import KdkitError
from kdkit.plugins.students.transformer import TransformerOptions, build_transformer_student
from kdkit.plugins.teachers.hf import HFOptions, build_hf_teacher
from kdkit.testing.checks import check_teacher


@pytest.fixture
def saved_classifier(tiny_context, tmp_path):
    """A small RoBERTa classifier with its BPE, saved like `kdkit teach` saves a teacher."""
    torch.manual_seed(0)
    opts = TransformerOptions(
        size="0.6M", vocab_size=400, hidden_size=32, num_layers=2, num_heads=2
    )
    model = build_transformer_student(opts, tiny_context)
    path = tmp_path / "teacher"
    model.save(str(path))
    return path


def test_hf_teacher_is_frozen_and_conforms(saved_classifier, tiny_context):
    teacher = build_hf_teacher(HFOptions(path=str(saved_classifier)), tiny_context)
    check_teacher(teacher, num_labels=3)
    assert not any(p.requires_grad for p in teacher.model.parameters())
    assert not teacher.model.training
    enc = teacher.encode(["x = 1", "y = 2"], 32)
    out = teacher(enc, Needs(True, (0, 2), (1, 2), True))
    assert out.hidden_states[2].shape == (2, enc.input_ids.shape[1], 32)
    assert out.embedding.shape == (2, 32)  # what RobertaClassificationHead reads: the <s> state
    torch.testing.assert_close(out.embedding, out.hidden_states[2][:, 0])


def test_fingerprint_changes_with_the_weights(saved_classifier, tiny_context):
    fp = build_hf_teacher(HFOptions(path=str(saved_classifier)), tiny_context).fingerprint()
    assert fp == build_hf_teacher(HFOptions(path=str(saved_classifier)), tiny_context).fingerprint()
    from safetensors.torch import load_file, save_file

    weights = saved_classifier / "model.safetensors"
    state = load_file(str(weights))
    key = next(k for k in state if k.endswith("classifier.out_proj.bias"))
    state[key] = state[key] + 1
    save_file(state, str(weights), metadata={"format": "pt"})
    assert build_hf_teacher(HFOptions(path=str(saved_classifier)), tiny_context).fingerprint() != fp


def test_unixcoder_prefix_is_detected_from_the_vocabulary(saved_classifier, tiny_context):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(saved_classifier))
    tok.add_special_tokens({"additional_special_tokens": ["<encoder-only>"]})
    tok.save_pretrained(str(saved_classifier))
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(saved_classifier))
    model.resize_token_embeddings(len(tok))
    model.save_pretrained(str(saved_classifier))
    teacher = build_hf_teacher(HFOptions(path=str(saved_classifier)), tiny_context)
    enc = teacher.encode(["x = 1"], 32)
    eo = tok.convert_tokens_to_ids("<encoder-only>")
    # <s> <encoder-only> </s> code </s>, with no character span on the three specials
    assert enc.input_ids[0, :3].tolist() == [tok.bos_token_id, eo, tok.sep_token_id]
    assert enc.input_ids[0, int(enc.attention_mask[0].sum()) - 1] == tok.sep_token_id
    assert enc.offsets[0, :3].tolist() == [[0, 0]] * 3
    assert enc.offsets[0, 3].tolist() == [0, 1]  # "x"


def test_missing_hub_weights_offline_say_how_to_point_at_a_local_dir(tiny_context, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(KdkitError) as err:
        build_hf_teacher(HFOptions(path="microsoft/unixcoder-base-nonexistent"), tiny_context)
    assert err.value.where == "teacher.path"
    assert "not on this machine" in err.value.what
    assert "teacher.path: DIR" in err.value.fix and "code-teacher" in err.value.fix


def test_a_teacher_with_other_labels_must_be_fine_tuned_first(saved_classifier, tiny_context):
    from kdkit.api import BuildContext
    from kdkit.testing.tiny import TinyTask

    class TwoLabels(TinyTask):
        labels = ("a", "b")

    ctx = BuildContext(task=TwoLabels(), splits=tiny_context.splits)
    with pytest.raises(KdkitError, match="3 classes but the task has 2") as err:
        build_hf_teacher(HFOptions(path=str(saved_classifier)), ctx)
    assert "kdkit teach" in err.value.fix


def test_mlm_masking_follows_roberta_and_never_touches_specials():
    from kdkit.plugins.models.mlm import mask_tokens

    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 1000, (200, 100))
    ids[:, 0], ids[:, -1] = 0, 2
    special = (ids == 0) | (ids == 2)
    inputs, labels = mask_tokens(ids, special, 4, 1000, gen)
    chosen = labels != -100
    assert not chosen[special].any()
    assert 0.13 < chosen.float().mean() < 0.17  # 15 % of the tokens
    assert torch.equal(labels[chosen], ids[chosen])
    masked = (inputs == 4) & chosen
    assert 0.75 < masked.sum() / chosen.sum() < 0.85  # 80 % of those become <mask>
    assert torch.equal(inputs[~chosen], ids[~chosen])


def test_mlm_pretraining_lowers_the_loss_and_updates_the_encoder(tiny_context):
    from kdkit.plugins.models.mlm import MLMSettings, pretrain_mlm

    torch.manual_seed(0)
    opts = TransformerOptions(
        size="0.6M", vocab_size=400, hidden_size=32, num_layers=2, num_heads=2
    )
    clf = build_transformer_student(opts, tiny_context)
    before = clf.model.roberta.embeddings.word_embeddings.weight.clone()
    texts = list(tiny_context.splits["train"]["text"])
    settings = MLMSettings(epochs=4, batch_size=8, lr=3e-3, max_length=64, seed=0,
                           device=torch.device("cpu"), log=lambda m: None)  # fmt: skip
    losses = pretrain_mlm(clf, texts, settings)
    assert losses[-1] < losses[0]
    assert not torch.equal(before, clf.model.roberta.embeddings.word_embeddings.weight)
