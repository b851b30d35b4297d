"""Students: exact parameter counts at the study's sizes, packing, conformance, save/reload."""

from __future__ import annotations

import pytest
import torch

from kdkit.api import Needs
from kdkit.plugins.students import gru, transformer
from kdkit.testing.checks import check_student


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
    study = {"0.06M": 0.06e6, "0.25M": 0.25e6, "0.6M": 0.6e6, "1.5M": 1.5e6, "7M": 7.1e6, "30M": 30.5e6, "122M": 122.6e6}[size]
    assert abs(n - study) / study < 0.1  # the study rounds; its head is not published


@pytest.mark.parametrize("size", list(transformer.SIZES))
def test_transformer_preset_counts_match_hand_count_and_budget(size):
    v, h, layers, heads = transformer.SIZES[size]
    assert 12 % layers == 0 and h % heads == 0  # layers map evenly onto a 12-layer teacher
    n = transformer.preset_parameter_count(size, num_labels=2)
    assert n == _roberta_formula(v, h, layers, 2)
    budget = {"0.06M": 0.06e6, "0.25M": 0.25e6, "0.6M": 0.6e6, "1.5M": 1.5e6, "7M": 7.1e6, "30M": 30.5e6, "122M": 122.6e6}[size]
    assert abs(n - budget) / budget < 0.05  # the study's GRU budget for this size


def test_students_pass_conformance(tiny_context):
    for build, opts in [(gru.build_gru_student, gru.GRUOptions(size="0.6M")),
                        (transformer.build_transformer_student,
                         transformer.TransformerOptions(size="0.6M"))]:  # fmt: skip
        student = build(opts, tiny_context)
        check_student(student, num_labels=3)
        assert student.info.num_parameters == sum(p.numel() for p in student.parameters())


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


def test_students_reload_with_identical_logits(tiny_context, tmp_path):
    from kdkit.engine.persist import load_student

    codes = [row for row in tiny_context.splits["test"]["text"]]
    for build, opts in [(gru.build_gru_student, gru.GRUOptions(size="0.6M")),
                        (transformer.build_transformer_student,
                         transformer.TransformerOptions(size="0.6M"))]:  # fmt: skip
        student = build(opts, tiny_context).eval()
        out = student(student.encode(codes, 64), Needs()).logits
        target = tmp_path / student.info.name
        student.save(str(target))
        again = load_student(str(target)).eval()
        assert again.info.num_parameters == student.info.num_parameters
        torch.testing.assert_close(again(again.encode(codes, 64), Needs()).logits, out)
