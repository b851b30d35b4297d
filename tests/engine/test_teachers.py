"""Teachers: conformance of every registered teacher, UniXcoder prefix, offline messages,
fingerprints, MLM pre-training, and `kdkit teach` through the teacher's ``trainable``."""

from __future__ import annotations

import pytest
import torch

from kdkit.api import BuildContext, Needs
from kdkit.discovery import load_plugins
from kdkit.errors import KdkitError
from kdkit.plugins.students.transformer import TransformerOptions, build_transformer_student
from kdkit.plugins.teachers.hf import HFOptions, build_hf_teacher
from kdkit.testing.checks import check_teacher

#: kdkit's own plugins: the conformance test below runs for every teacher they register.
BUILTINS = load_plugins(distributions={"kdkit"}).registry
TEACHERS = BUILTINS.names("teacher")
#: Small options per built-in teacher (CPU seconds; ``{saved}`` is a saved tiny classifier). A
#: new built-in without an entry is built with its defaults, so it is tested too.
SMALL: dict[str, dict] = {
    "hf": {"path": "{saved}"},
    "code-teacher": {
        "vocab_size": 300,
        "hidden_size": 16,
        "num_layers": 2,
        "num_heads": 2,
        "training": {"epochs": 1, "batch_size": 16, "lr": 1e-3},
    },
    "minilm": {"training": {"epochs": 1, "batch_size": 16}},
}


def _small_options(name: str, saved) -> dict:
    return {k: (str(saved) if v == "{saved}" else v) for k, v in SMALL.get(name, {}).items()}


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
    settings = MLMSettings(
        epochs=4,
        batch_size=8,
        lr=3e-3,
        max_length=64,
        seed=0,
        device=torch.device("cpu"),
        log=lambda m: None,
    )
    losses = pretrain_mlm(clf, texts, settings)
    assert losses[-1] < losses[0]
    assert not torch.equal(before, clf.model.roberta.embeddings.word_embeddings.weight)


@pytest.mark.parametrize("name", TEACHERS)
def test_every_registered_teacher_conforms(name, saved_classifier, tiny_context):
    """Frozen outputs of every layer, a stable fingerprint, and (for teachers kdkit saves) a
    reload through the component's ``load`` that gives the teacher's logits exactly."""
    component = BUILTINS.get("teacher", name)
    options = component.options(_small_options(name, saved_classifier))
    try:
        teacher = component.build(options, tiny_context)
    except KdkitError as exc:
        if "is not installed" in exc.what:  # an optional model package (minilm)
            pytest.skip(f"{name}: {exc.what} ({exc.fix})")
        raise
    check_teacher(teacher, num_labels=3)
    codes = list(tiny_context.splits["test"]["text"])
    enc = teacher.encode(codes, 64)
    layers = teacher.info.num_layers
    out = teacher(enc, Needs(True, tuple(range(layers + 1)), tuple(range(1, layers + 1)), True))
    assert sorted(out.hidden_states) == list(range(layers + 1))
    for i, states in out.hidden_states.items():
        assert states.shape == (len(codes), enc.input_ids.shape[1], teacher.info.hidden_size), i
        assert not states.requires_grad
    assert out.embedding.shape == (len(codes), teacher.info.feature_size)
    again = component.build(options, tiny_context)  # a second build (a cached preset: reused)
    assert again.fingerprint() == teacher.fingerprint()
    torch.testing.assert_close(again(enc, Needs()).logits, out.logits, rtol=0, atol=0)
    directory = getattr(teacher, "directory", None)
    if component.load is not None and directory:
        from kdkit.engine.persist import load_student

        model = load_student(directory, BUILTINS).eval()
        with torch.no_grad():
            reloaded = model(model.encode(codes, 64), Needs()).logits
        torch.testing.assert_close(reloaded, out.logits, rtol=0, atol=0)


def test_a_preset_teacher_records_its_component(saved_classifier, tiny_context):
    """A trained code teacher's kdkit.json names it, so `kdkit predict` finds its loader."""
    from kdkit.models import read_model_meta

    component = BUILTINS.get("teacher", "code-teacher")
    options = component.options(_small_options("code-teacher", saved_classifier))
    teacher = component.build(options, tiny_context)
    meta = read_model_meta(teacher.directory)
    assert meta["component"] == {"kind": "teacher", "name": "code-teacher"}
    assert meta["labels"] == list(tiny_context.task.labels)


def test_kdkit_teach_fine_tunes_an_hf_teacher_through_its_trainable(
    saved_classifier, tmp_path, monkeypatch, capsys
):
    """`kdkit teach` asks the teacher's plugin for the model to fine-tune (no plugin import)."""
    import json

    from kdkit.cli import main
    from kdkit.engine.persist import load_student
    from kdkit.models import read_model_meta

    from . import tinyplug

    plugins = load_plugins(distributions={"kdkit"}, extra=[("tiny-test", tinyplug)])
    monkeypatch.setattr("kdkit.cli.teach.load_plugins", lambda: plugins)
    run = tmp_path / "teach.yaml"
    run.write_text(
        f"task: tiny\nteacher: {{name: hf, path: {saved_classifier}}}\n"
        "training: {max_length: 64, device: cpu}\n"
        f"cache: {{dir: {tmp_path / 'cache'}}}\n"
    )
    out = tmp_path / "out"
    assert (
        main(
            [
                "teach",
                str(run),
                "-o",
                str(out),
                "--epochs",
                "1",
                "--batch-size",
                "8",
                "--lr",
                "1e-3",
                "--quiet",
            ]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed["teacher"] == str(out) and 0 <= printed["test_accuracy"] <= 1
    meta = read_model_meta(out)
    assert meta["component"] == {"kind": "teacher", "name": "hf"}
    assert meta["labels"] == list(tinyplug.TinyTask.labels)
    model = load_student(out, plugins.registry)
    assert model.num_labels == 3
    teacher = build_hf_teacher(HFOptions(path=str(out)), BuildContext(task=tinyplug.TinyTask()))
    check_teacher(teacher, num_labels=3)


def test_teacher_precision_auto_follows_native_bf16_and_keeps_old_cache_keys(monkeypatch):
    from kdkit.plugins.teachers import hf

    cpu = torch.device("cpu")
    assert hf.teach_precision("fp32", cpu) == "fp32" and hf.teach_precision("bf16", cpu) == "bf16"
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert hf.teach_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert hf.teach_precision("auto", cpu) == "fp32"  # emulated bf16 is slower than fp32
    # the default (fp32) leaves the cache key as it was before the option existed
    plain = hf.CodeTeacherOptions()
    assert "precision" not in hf._spec_options(plain)["training"]
    assert hf._spec_options(plain)["training"] == {
        k: v for k, v in plain.training.model_dump(mode="json").items() if k != "precision"
    }
    auto = hf.CodeTeacherOptions(training={"precision": "auto"})
    assert hf._spec_options(auto)["training"]["precision"] == "auto"
