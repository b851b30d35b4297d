"""Students: exact parameter counts at the study's sizes, packing, and conformance of every
registered student (outputs per layer, save -> load_student through the registry, legacy files)."""

from __future__ import annotations

import pytest
import torch

from kdkit.api import Needs
from kdkit.discovery import load_plugins
from kdkit.errors import KdkitError
from kdkit.plugins.students import gru, transformer
from kdkit.testing.checks import check_student

#: kdkit's own plugins: the conformance tests below run for every student they register.
BUILTINS = load_plugins(distributions={"kdkit"}).registry
STUDENTS = BUILTINS.names("student")
#: Small options per built-in student (CPU seconds); a new built-in without an entry is built with
#: its defaults, so it is tested too (and fails here if it cannot be built on the tiny task).
SMALL: dict[str, dict] = {
    "gru": {"size": "0.6M", "vocab_size": 300, "hidden_size": 16},
    "transformer": {
        "size": "0.6M",
        "vocab_size": 300,
        "hidden_size": 32,
        "num_layers": 2,
        "num_heads": 2,
    },
}


def _build(name: str, context):
    component = BUILTINS.get("student", name)
    torch.manual_seed(0)
    return component.build(component.options(SMALL.get(name, {})), context)


def _gru_formula(v: int, h: int, layers: int, c: int) -> int:
    """Hand count: embedding + BiGRU layers (3 gates, 2 biases, 2 directions) + dense + out."""
    n = v * h
    for i in range(layers):
        inp = h if i == 0 else 2 * h
        n += 2 * 3 * (inp * h + h * h + 2 * h)
    return n + (2 * h * 2 * h + 2 * h) + (2 * h * c + c)


def _roberta_formula(v: int, h: int, layers: int, c: int, positions: int = 514) -> int:
    """Hand count of RobertaForSequenceClassification (FFN 4h, one token type)."""
    i = 4 * h
    emb = v * h + positions * h + h + 2 * h
    layer = 4 * (h * h + h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h
    head = (h * h + h) + (h * c + c)
    return emb + layers * layer + head


@pytest.mark.parametrize("size", list(gru.SIZES))
def test_gru_preset_counts_match_hand_count_and_study(size):
    v, h, layers = gru.SIZES[size]
    n = gru.preset_parameter_count(size, num_labels=2)
    assert n == _gru_formula(v, h, layers, 2)
    study = {
        "0.06M": 0.06e6,
        "0.25M": 0.25e6,
        "0.6M": 0.6e6,
        "1.5M": 1.5e6,
        "7M": 7.1e6,
        "30M": 30.5e6,
        "122M": 122.6e6,
    }[size]
    assert abs(n - study) / study < 0.1  # the study rounds; its head is not published


@pytest.mark.parametrize("size", list(transformer.SIZES))
def test_transformer_preset_counts_match_hand_count_and_budget(size):
    v, h, layers, heads = transformer.SIZES[size]
    assert 12 % layers == 0 and h % heads == 0  # layers map evenly onto a 12-layer teacher
    n = transformer.preset_parameter_count(size, num_labels=2)
    assert n == _roberta_formula(v, h, layers, 2)
    budget = {
        "0.06M": 0.06e6,
        "0.25M": 0.25e6,
        "0.6M": 0.6e6,
        "1.5M": 1.5e6,
        "7M": 7.1e6,
        "30M": 30.5e6,
        "122M": 122.6e6,
    }[size]
    assert abs(n - budget) / budget < 0.05  # the study's GRU budget for this size


def test_gru_packing_ignores_padding(tiny_context):
    """A row's outputs do not change when its batch is padded further (no steps over padding)."""
    torch.manual_seed(0)
    student = gru.build_gru_student(gru.GRUOptions(size="0.6M", hidden_size=16), tiny_context)
    student.eval()
    short = "x = 1"
    long = "def f(a, b):\n    return [a + b for _ in range(10)]\n" * 4
    needs = Needs(True, (1, 2), (1, 2), True)
    alone = student(student.encode([short], 64), needs)
    enc = student.encode([short, long], 64)
    assert enc.input_ids.shape[1] > alone.attention_mask.shape[1]  # really padded more
    both = student(enc, needs)
    torch.testing.assert_close(both.logits[0], alone.logits[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(both.pooled[2][0], alone.pooled[2][0], rtol=0, atol=1e-6)
    n = int(alone.attention_mask.sum())
    torch.testing.assert_close(
        both.hidden_states[1][0, :n], alone.hidden_states[1][0], rtol=0, atol=1e-6
    )
    assert float(both.hidden_states[1][0, n:].abs().sum()) == 0.0  # padding positions untouched


@pytest.mark.parametrize("name", STUDENTS)
def test_every_registered_student_conforms(name, tiny_context):
    """Shapes of every layer's outputs, gradients to all parameters, an exact parameter count."""
    student = _build(name, tiny_context)
    check_student(student, num_labels=3)
    assert student.info.num_parameters == sum(p.numel() for p in student.parameters())
    enc = student.encode(["x = 1", "def f(a):\n    return a"], 64)
    layers = student.info.num_layers
    out = student(
        enc,
        Needs(hidden_layers=tuple(range(layers + 1)), pooled_layers=tuple(range(1, layers + 1))),
    )
    assert sorted(out.hidden_states) == list(range(layers + 1))  # layer 0 = embeddings
    for i in range(1, layers + 1):
        assert out.hidden_states[i].shape[:2] == enc.input_ids.shape
        assert out.pooled[i].shape == (2, out.hidden_states[i].shape[-1])


@pytest.mark.parametrize("name", STUDENTS)
def test_every_registered_student_reloads_with_identical_logits(name, tiny_context, tmp_path):
    """save -> load_student (the registry finds the component's loader) gives the same model."""
    from kdkit.engine.persist import load_student
    from kdkit.models import read_model_meta

    codes = list(tiny_context.splits["test"]["text"])
    student = _build(name, tiny_context).eval()
    out = student(student.encode(codes, 64), Needs()).logits
    target = tmp_path / "saved"
    student.save(str(target))
    meta = read_model_meta(target)
    assert meta["component"] == {"kind": "student", "name": name}
    assert meta["labels"] == list(tiny_context.task.labels)
    again = load_student(str(target), BUILTINS).eval()
    assert type(again) is type(student)
    assert again.info == student.info
    torch.testing.assert_close(again(again.encode(codes, 64), Needs()).logits, out, rtol=0, atol=0)
    again.save(str(tmp_path / "again"))  # a reloaded model saves the same kdkit.json
    assert read_model_meta(tmp_path / "again") == meta


@pytest.mark.parametrize("name", STUDENTS)
def test_legacy_kdkit_json_without_component_still_loads(name, tiny_context, tmp_path):
    """Files written before kdkit recorded the component (``kind: hf|gru``) load as before."""
    import json

    from kdkit.engine.persist import load_student

    legacy_kind = {"transformer": "hf"}.get(name, name)  # what the old save() wrote
    student = _build(name, tiny_context).eval()
    student.save(str(tmp_path / "m"))
    meta_path = tmp_path / "m" / "kdkit.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(
        json.dumps({"kind": legacy_kind, **{k: v for k, v in meta.items() if k != "component"}})
    )
    again = load_student(str(tmp_path / "m"), BUILTINS).eval()
    codes = ["x = 1", "import os"]
    torch.testing.assert_close(
        again(again.encode(codes, 64), Needs()).logits,
        student(student.encode(codes, 64), Needs()).logits,
        rtol=0,
        atol=0,
    )
    assert again.info == student.info


def test_a_model_whose_component_is_not_installed_says_what_to_install(tiny_context, tmp_path):
    import json

    from kdkit.engine.persist import load_student

    student = _build("gru", tiny_context)
    student.save(str(tmp_path / "m"))
    meta_path = tmp_path / "m" / "kdkit.json"
    meta = json.loads(meta_path.read_text())
    meta["component"] = {"kind": "student", "name": "charbag"}
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(KdkitError) as err:
        load_student(str(tmp_path / "m"), BUILTINS)
    assert "student 'charbag'" in err.value.what and "not installed" in err.value.what
    assert "install the distribution" in err.value.fix
    assert err.value.where.endswith("kdkit.json")
    meta_path.write_text(json.dumps({"name": "x"}))  # neither component nor legacy kind
    with pytest.raises(KdkitError, match="does not say which component"):
        load_student(str(tmp_path / "m"), BUILTINS)


def test_a_component_without_a_loader_cannot_reload(tiny_context, tmp_path):
    from kdkit.discovery import load_plugins
    from kdkit.engine.persist import load_student
    from kdkit.errors import PluginError
    from kdkit.hookspecs import hookimpl
    from kdkit.models import ComponentRef, write_model_meta

    class NoLoader:
        @hookimpl
        def register_students(self, register):
            register("no-loader", lambda options, context: None, description="no load=")

    registry = load_plugins(distributions=set(), extra=[("no-loader-plugin", NoLoader())]).registry
    write_model_meta(tmp_path / "m", ComponentRef("student", "no-loader"), {"name": "x"})
    with pytest.raises(PluginError, match="cannot reload saved models") as err:
        load_student(str(tmp_path / "m"), registry)
    assert "no-loader-plugin" in err.value.where
