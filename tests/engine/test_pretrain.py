"""The code encoder pre-trained once per machine (kdkit.plugins.models.pretrain): it reads only
files that are not held out, resumes an interrupted pre-training exactly, is reused from the
cache, starts the code teacher, and refuses data whose evaluation splits it may have read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from kdkit.data.corpus import stdlib_sample
from kdkit.data.holdout import describe, is_held_out
from kdkit.errors import KdkitError
from kdkit.plugins.models import pretrain as pt

SHAPE = pt.EncoderShape(vocab_size=400, hidden=16, layers=1, heads=2)
FILES = ("shutil.py", "pathlib.py", "os.py", "inspect.py", "tarfile.py", "platform.py", "pdb.py")


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    """A directory of seven real stdlib modules (some of them held out)."""
    root = tmp_path_factory.mktemp("src")
    for p in stdlib_sample(FILES):
        shutil.copy(p, root / p.name)
    return root


def options(src: Path, **kw) -> pt.PretrainOptions:
    values = {"sources": [str(src)], "steps": 4, "batch_size": 4, "window": 32, "save_every": 2}
    return pt.PretrainOptions(**{**values, **kw})


def test_pretraining_reads_only_files_that_are_not_held_out(src, tmp_path):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    held = [f for f in FILES if is_held_out(f"{src}:{f}")]
    assert 0 < len(held) < len(FILES)  # the fixture exercises both sides of the rule
    folder = pt.pretrained_encoder(options(src), SHAPE, tmp_path, progress=False, log=lambda m: 0)
    record = pt.read_record(folder)
    assert record["holdout"] == describe("file")
    assert record["corpus"]["files"] == len(FILES) and record["corpus"]["held_out_files"] == len(
        held
    )
    texts, _ = pt.local_functions(options(src), log=lambda m: 0)
    assert record["corpus"]["functions"] == len(texts) > 100
    # no function of a held-out file is in the corpus (each module's own functions differ)
    from kdkit.data.pyfuncs import extract_functions
    from kdkit.data.sources import SkipCounter, read_module

    corpus = set(texts)
    for name in held:
        parsed = read_module(src / name, SkipCounter())
        assert not corpus & {fn.text for fn in extract_functions(*parsed)}, name
    # an ordinary HF folder; the task's hole is one token of its vocabulary
    model = AutoModelForMaskedLM.from_pretrained(str(folder))
    tok = AutoTokenizer.from_pretrained(str(folder))
    assert model.config.hidden_size == 16 and len(tok) == SHAPE.vocab_size
    assert len(tok("x = __HOLE__", add_special_tokens=False)["input_ids"]) == 3
    assert [entry["step"] for entry in record["losses"]] == [2, 4]
    assert not (folder.parent / "work").exists()  # corpus and checkpoint removed when done


def test_an_interrupted_pretraining_resumes_exactly(src, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    whole = pt.pretrained_encoder(
        options(src), SHAPE, tmp_path / "a", progress=False, log=lambda m: 0
    )
    calls = {"n": 0}
    real = pt.clip_gradients

    def dies_at_the_third_step(params, max_norm):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the user's Ctrl-C after the step-2 checkpoint
        return real(params, max_norm)

    monkeypatch.setattr(pt, "clip_gradients", dies_at_the_third_step)
    with pytest.raises(KeyboardInterrupt):
        pt.pretrained_encoder(options(src), SHAPE, tmp_path / "b", progress=False, log=print)
    monkeypatch.setattr(pt, "clip_gradients", real)
    logged: list[str] = []
    resumed = pt.pretrained_encoder(
        options(src), SHAPE, tmp_path / "b", progress=False, log=logged.append
    )
    assert any("resuming the pre-training at step 2/4" in m for m in logged)
    a = load_file(str(whole / "model.safetensors"))
    b = load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_a_pretrained_encoder_is_reused_not_retrained(src, tmp_path, monkeypatch):
    first = pt.pretrained_encoder(options(src), SHAPE, tmp_path, progress=False, log=lambda m: 0)

    def no_training(*a, **k):
        raise AssertionError("trained again")

    monkeypatch.setattr(pt, "_train", no_training)
    assert pt.pretrained_encoder(options(src), SHAPE, tmp_path, progress=False) == first
    # another architecture or number of steps is another encoder
    assert pt.pretrain_key(options(src), SHAPE) != pt.pretrain_key(options(src, steps=5), SHAPE)
    assert pt.pretrain_key(options(src), SHAPE) == pt.pretrain_key(
        options(src, save_every=1), SHAPE
    )


def test_a_corrupt_checkpoint_is_refused_with_the_fix(src, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = pt.clip_gradients

    def dies(params, max_norm):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(params, max_norm)

    monkeypatch.setattr(pt, "clip_gradients", dies)
    with pytest.raises(KeyboardInterrupt):
        pt.pretrained_encoder(options(src), SHAPE, tmp_path, progress=False, log=lambda m: 0)
    monkeypatch.setattr(pt, "clip_gradients", real)
    ckpt = next(tmp_path.glob("pretrained/*/work/checkpoint"))
    (ckpt / "state.json").write_text("{")
    with pytest.raises(KdkitError) as err:
        pt.pretrained_encoder(options(src), SHAPE, tmp_path, progress=False, log=lambda m: 0)
    assert str(ckpt) in err.value.where and "delete" in err.value.fix


class _Task:
    name = "exception"

    def __init__(self, stats):
        self.stats = stats

    def build_stats(self):
        return self.stats


def test_data_built_without_the_holdout_is_refused():
    pt.check_holdout(_Task(None))  # public or in-memory data: nothing to check
    pt.check_holdout(_Task({"options": {"holdout": describe("file")}}))
    for bad in (None, describe("package"), {"salt": "other", "share": 0.4, "level": "file"}):
        with pytest.raises(KdkitError) as err:
            pt.check_holdout(_Task({"options": {"holdout": bad}}))
        assert "--no-holdout" in err.value.fix and err.value.where == "teacher.pretrain"


def test_the_code_teacher_starts_from_the_pretrained_encoder(src, tiny_context):
    from transformers import AutoModelForMaskedLM

    from kdkit.discovery import load_plugins
    from kdkit.models import read_model_meta

    registry = load_plugins(distributions={"kdkit"}).registry
    component = registry.get("teacher", "code-teacher")
    opts = component.options(
        {
            "vocab_size": 400,
            "hidden_size": 16,
            "num_layers": 1,
            "num_heads": 2,
            "training": {"epochs": 1, "batch_size": 16, "lr": 1e-3},
            "pretrain": options(src).model_dump(),
        }
    )
    teacher = component.build(opts, tiny_context)
    meta = read_model_meta(teacher.directory)
    folder = Path(meta["pretrained"]["folder"])
    assert meta["pretrained"]["steps"] == 4 and (folder / "pretrain.json").is_file()
    assert len(teacher.tokenizer) == SHAPE.vocab_size  # the encoder's vocabulary, hole included
    encoder = AutoModelForMaskedLM.from_pretrained(str(folder))
    # fine-tuning moved the weights, but they started from the encoder's (same vocab table)
    emb = teacher.model.roberta.embeddings.word_embeddings.weight
    assert emb.shape == encoder.roberta.embeddings.word_embeddings.weight.shape
    cos = torch.nn.functional.cosine_similarity(
        emb.flatten(), encoder.roberta.embeddings.word_embeddings.weight.flatten(), dim=0
    )
    assert cos > 0.9  # one short epoch at lr 1e-3 from the encoder; random init gives ~0


def test_kdkit_pretrain_copies_the_encoder_out(src, tmp_path, capsys):
    from transformers import AutoModelForMaskedLM

    from kdkit.cli import main

    run = tmp_path / "run.yaml"
    pre = json.dumps(options(src).model_dump(mode="json"))
    run.write_text(
        "task: exception\n"
        f"teacher: {{name: code-teacher, vocab_size: 400, hidden_size: 16, num_layers: 1, "
        f"num_heads: 2, pretrain: {pre}}}\n"
        f"cache: {{dir: {tmp_path / 'cache'}}}\n"
    )
    out = tmp_path / "encoder"
    assert main(["pretrain", str(run), "--output", str(out), "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["encoder"] == str(out) and printed["steps"] == 4
    assert AutoModelForMaskedLM.from_pretrained(str(out)).config.num_hidden_layers == 1
    assert main(["pretrain", str(run), "--output", str(out)]) == 2  # never overwrites
    assert "exists" in capsys.readouterr().err
    run.write_text("task: exception\nteacher: {name: code-teacher}\n")
    assert main(["pretrain", str(run)]) == 2
    err = capsys.readouterr().err
    assert "no pretrain section" in err and "Traceback" not in err


def test_a_bit_flip_in_the_cached_encoder_is_detected_before_use(src, tmp_path):
    folder = pt.pretrained_encoder(options(src), SHAPE, tmp_path, progress=False, log=lambda m: 0)
    assert (folder / "kdkit-manifest.json").is_file()
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside the tensor data: safetensors itself cannot tell
    weights.write_bytes(bytes(data))
    with pytest.raises(KdkitError) as err:
        pt.pretrained_encoder(options(src), SHAPE, tmp_path, progress=False, log=lambda m: 0)
    key = folder.parent.name
    assert "model.safetensors" in str(err.value) and f"kdkit cache clear {key}" in err.value.fix


def test_the_masked_only_head_gives_the_full_heads_loss_and_gradients():
    """masked_lm_loss applies the vocabulary head to the chosen positions only; its loss and every
    gradient equal RobertaForMaskedLM's own (which runs the head on all positions)."""
    from transformers import RobertaConfig, RobertaForMaskedLM

    from kdkit.plugins.models.mlm import mask_tokens, masked_lm_loss

    torch.manual_seed(0)
    cfg = RobertaConfig(
        vocab_size=300,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=40,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    model = RobertaForMaskedLM(cfg)
    ids = torch.randint(5, 300, (4, 24))
    attn = torch.ones_like(ids)
    attn[1, 15:] = 0
    gen = torch.Generator().manual_seed(1)
    inputs, labels = mask_tokens(ids, attn == 0, 4, 300, gen)
    assert 0 < int((labels != -100).sum()) < labels.numel() // 2

    ref = model(input_ids=inputs, attention_mask=attn, labels=labels).loss
    ref.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    ours = masked_lm_loss(model, inputs, attn, labels)
    ours.backward()
    assert torch.allclose(ours, ref, rtol=1e-6, atol=1e-6)
    assert ref_grads and all(
        torch.allclose(p.grad, ref_grads[n], rtol=1e-5, atol=1e-6)
        for n, p in model.named_parameters()
        if n in ref_grads
    )
