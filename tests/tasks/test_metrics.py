"""Metrics against hand-computed values (and scikit-learn's conventions)."""

from __future__ import annotations

import pytest
import torch

from kdkit.api import IGNORE_INDEX
from kdkit.data import metrics


def onehot_logits(preds: list[int], num_classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(preds), num_classes).float()


def test_binary_metrics_hand_computed():
    # y = 1 1 1 0 0 0 1 0 ; p = 1 0 1 1 0 0 1 0 -> tp=3 fp=1 fn=1 tn=3
    y = torch.tensor([1, 1, 1, 0, 0, 0, 1, 0])
    p = onehot_logits([1, 0, 1, 1, 0, 0, 1, 0], 2)
    m = metrics.binary_metrics(p, y)
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(0.75)


def test_f1_asymmetric_and_zero_division():
    y = torch.tensor([1, 1, 1, 1, 0])
    p = torch.tensor([1, 0, 0, 0, 1])  # tp=1 fp=1 fn=3
    out = metrics.binary_precision_recall_f1(p, y)
    assert out == pytest.approx({"precision": 0.5, "recall": 0.25, "f1": 2 * 1 / (2 + 1 + 3)})
    # Nothing predicted positive: precision is 0 by convention, not NaN.
    none = metrics.binary_precision_recall_f1(
        torch.zeros(4, dtype=torch.long), torch.tensor([1, 0, 1, 0])
    )
    assert none == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_top_k_accuracy():
    logits = torch.tensor([[0.1, 0.5, 0.4], [0.7, 0.2, 0.1], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    labels = torch.tensor([2, 0, 0, 2])
    assert metrics.top_k_accuracy(logits, labels, 1) == pytest.approx(1 / 4)
    assert metrics.top_k_accuracy(logits, labels, 2) == pytest.approx(2 / 4)
    assert metrics.top_k_accuracy(logits, labels, 3) == 1.0
    assert metrics.top_k_accuracy(logits, labels, 10) == 1.0  # k > classes


def test_macro_f1_matches_sklearn_example():
    # scikit-learn's f1_score docs: y_true=[0,1,2,0,1,2], y_pred=[0,2,1,0,0,1] -> macro 0.2666...
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    p = torch.tensor([0, 2, 1, 0, 0, 1])
    assert metrics.macro_f1(p, y) == pytest.approx(0.26666666, abs=1e-6)


def test_ignore_index_rows_are_skipped():
    y = torch.tensor([1, IGNORE_INDEX, 0])
    p = torch.tensor([1, 0, 1])
    assert metrics.accuracy(p, y) == pytest.approx(0.5)


def test_multiclass_metrics_names_and_range():
    torch.manual_seed(0)
    logits = torch.randn(50, 20)
    labels = torch.randint(0, 20, (50,))
    m = metrics.multiclass_metrics(logits, labels)
    assert set(m) == {"top1", "top3", "macro_f1", "accuracy"}
    assert all(0.0 <= v <= 1.0 for v in m.values())
    assert m["top1"] <= m["top3"]
    perfect = metrics.multiclass_metrics(onehot_logits(labels.tolist(), 20), labels)
    assert perfect["top1"] == perfect["macro_f1"] == 1.0


def test_roc_auc_known_values():
    assert metrics.roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert metrics.roc_auc([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1]) == pytest.approx(0.5)  # ties
    assert metrics.roc_auc([1, 2, 3, 4], [0, 0, 1, 1]) == 1.0
    assert metrics.roc_auc([4, 3, 2, 1], [0, 0, 1, 1]) == 0.0
