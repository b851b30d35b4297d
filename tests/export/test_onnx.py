"""`kdkit export`: the GRU's padded path equals its packed one; every student kind exports to
ONNX with logits equal to PyTorch's on batches and lengths it was not traced with; the HF
folder export; the CLI prints parity and the latency of PyTorch and ONNX Runtime."""

from __future__ import annotations

import json

import pytest
import torch

from kdkit.api import BuildContext, Needs
from kdkit.discovery import load_plugins
from kdkit.engine.persist import load_student
from kdkit.errors import KdkitError
from kdkit.export.onnx import OPSET, export_onnx, onnx_available, ort_session, run_session
from kdkit.plugins.students.gru import BiGRUClassifier, PaddedBiGRU
from kdkit.testing.tiny import LABELS, TinyTask

needs_onnx = pytest.mark.skipif(not onnx_available(), reason="pip install 'kdkit[onnx]'")
BUILTINS = load_plugins(distributions={"kdkit"}).registry
#: Small options of every built-in student kind (a new kind without an entry uses its defaults).
SMALL = {
    "gru": {"size": "0.06M", "vocab_size": 300, "num_layers": 2},
    "transformer": {"size": "0.06M", "vocab_size": 300, "num_layers": 2, "num_heads": 2},
}


def test_padded_bigru_equals_the_packed_network():
    torch.manual_seed(0)
    net = BiGRUClassifier(60, 12, 3, 4, 0.3, 1).eval()
    lengths = [11, 4, 1, 0, 7, 2]  # a full row, short rows, an empty row (runs one step)
    ids = torch.randint(2, 60, (len(lengths), 11))
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        ids[i, n:] = 1
    with torch.no_grad():
        packed = net.run(ids, mask, Needs()).logits
        padded = PaddedBiGRU(net)(ids, mask)
    torch.testing.assert_close(padded, packed, atol=1e-6, rtol=1e-5)
    # and it really depends on the lengths: the same ids with a longer mask differ
    with torch.no_grad():
        assert not torch.allclose(PaddedBiGRU(net)(ids, torch.ones_like(mask)), packed, atol=1e-4)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    task = TinyTask()
    cache = tmp_path_factory.mktemp("cache")
    return BuildContext(task=task, splits=task.load(), cache_dir=str(cache), max_length=64)


@pytest.fixture(scope="module", params=BUILTINS.names("student"))
def exported(request, tiny, tmp_path_factory):
    """(kind, reloaded student, model dir, export result, export dir), exported once per kind."""
    if not onnx_available():
        pytest.skip("pip install 'kdkit[onnx]'")
    torch.manual_seed(0)
    comp = BUILTINS.get("student", request.param)
    student = comp.build(comp.config(**SMALL.get(request.param, {})), tiny)
    root = tmp_path_factory.mktemp(f"export-{request.param}")
    student.save(str(root / "model"))
    reloaded = load_student(root / "model", BUILTINS).eval()
    texts = list(tiny.splits["train"]["text"][:5])  # batch 5 at trace time
    result = export_onnx(
        reloaded,
        root / "onnx",
        examples=texts,
        max_length=48,
        model_dir=root / "model",
        labels=LABELS,
        throughput_batch=8,
    )
    return request.param, reloaded, root / "model", result, root / "onnx"


@needs_onnx
def test_onnx_logits_match_pytorch_on_other_batches_and_lengths(exported, tiny):
    kind, student, _, result, out = exported
    assert result.max_abs_diff < 1e-4 and result.argmax_agreement == 1.0
    session = ort_session(out / "model.onnx")
    texts = list(tiny.splits["test"]["text"])
    for rows, max_length in ((texts[:1], 64), (texts[:8], 64), (texts[2:5], 20)):
        enc = student.encode(rows, max_length)  # other batch sizes and sequence lengths
        with torch.no_grad():
            ref = student(enc, Needs()).logits
        got = run_session(session, result.input_names, enc)
        assert got.shape == ref.shape
        torch.testing.assert_close(
            got, ref, atol=1e-4, rtol=1e-4, msg=f"{kind} at {tuple(enc.input_ids.shape)}"
        )


@needs_onnx
def test_onnx_folder_is_self_describing(exported):
    import onnx

    kind, _, _, result, out = exported
    meta = json.loads((out / "onnx.json").read_text())
    assert meta["opset"] == OPSET and meta["labels"] == list(LABELS)
    assert meta["inputs"] == ["input_ids", "attention_mask"]
    assert (out / "tokenizer.json").is_file()
    assert json.loads((out / "config.json").read_text())["id2label"]["0"] == LABELS[0]
    graph = onnx.load(str(out / "model.onnx")).graph
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input]
    assert all(isinstance(d[0], str) and isinstance(d[1], str) for d in dims)  # dynamic axes
    for name in ("pytorch", "onnxruntime"):
        assert result.timings[name]["latency_ms"] > 0 and result.timings[name]["throughput"] > 0


@needs_onnx
def test_cli_export_onnx_prints_parity_and_both_latencies(exported, tmp_path, capsys):
    from kdkit.cli import main

    kind, _, model_dir, _, _ = exported
    assert (
        main(
            [
                "export",
                str(model_dir),
                "--format",
                "onnx",
                "--out",
                str(tmp_path / "o"),
                "--max-length",
                "32",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["opset"] == OPSET and report["max_abs_diff"] < 1e-4
    assert set(report["timings"]) == {"pytorch", "onnxruntime"}
    assert "onnxruntime  latency" in captured.err
    # a non-empty output folder is never overwritten
    assert main(["export", str(model_dir), "--format", "onnx", "--out", str(tmp_path / "o")]) == 2


@needs_onnx
def test_cli_export_hf(exported, tmp_path, capsys):
    from kdkit.cli import main

    kind, student, model_dir, _, _ = exported
    code = main(["export", str(model_dir), "--format", "hf", "--out", str(tmp_path / "hf")])
    if kind == "gru":  # not a transformers architecture: ONNX is its deployment format
        assert code == 2 and "--format onnx" in capsys.readouterr().err
        return
    assert code == 0
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "hf")).eval()
    assert model.config.id2label == dict(enumerate(LABELS))
    enc = student.encode(["x = 1"], 32)
    with torch.no_grad():
        ref = student(enc, Needs()).logits
        got = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask).logits
    torch.testing.assert_close(got, ref)


def test_export_without_the_extra_names_it(monkeypatch, tmp_path):
    import kdkit.export.onnx as mod

    monkeypatch.setattr(mod, "onnx_available", lambda: False)
    with pytest.raises(KdkitError) as err:
        mod.export_onnx(object(), tmp_path / "x")
    assert "kdkit[onnx]" in err.value.fix


@needs_onnx
def test_efficiency_reports_onnx_runtime_beside_pytorch(exported, tiny):
    from kdkit.study.efficiency import measure_onnx
    from kdkit.study.report_model import efficiency_tables

    kind, student, _, _, _ = exported
    if kind != "gru":  # one kind is enough here: every kind's export is tested above
        pytest.skip("measured on the gru only")
    examples = list(tiny.splits["test"]["text"])
    m = measure_onnx(student, examples, 48, repeats=4, batch=8)
    assert m["onnxruntime_latency_ms"] > 0 and m["onnxruntime_throughput"] > 0
    assert m["onnx_max_abs_diff"] < 1e-4
    row = {
        "task": "tiny",
        "label": "gru",
        "kind": "student",
        "latency_ms": 1.0,
        "throughput": 9.0,
        **m,
    }
    titles = [t for t, _, _ in efficiency_tables({"models": [row]})]
    assert "ONNX Runtime beside PyTorch (CPU, same inputs)" in titles
