"""Classification metrics, implemented once for every task.

All functions take ``[N, C]`` logits (or ``[N]`` predicted ids) and ``[N]`` integer labels, skip
rows labelled :data:`kdkit.api.IGNORE_INDEX`, and return plain floats in ``[0, 1]`` (fractions,
not percentages: the report layer multiplies by 100). Division by zero (no predicted or no true
positives) gives 0.0, as scikit-learn's ``zero_division=0`` does.
"""

from __future__ import annotations

import torch

from kdkit.api import IGNORE_INDEX


def _valid(labels: torch.Tensor) -> torch.Tensor:
    return labels != IGNORE_INDEX


def _predictions(logits_or_preds: torch.Tensor) -> torch.Tensor:
    """``[N, C]`` logits -> ``[N]`` arg-max ids; ``[N]`` ids pass through."""
    return logits_or_preds.argmax(dim=-1) if logits_or_preds.dim() == 2 else logits_or_preds


def _safe_div(num: float, den: float) -> float:
    return float(num) / float(den) if den else 0.0


def accuracy(logits_or_preds: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of rows whose arg-max prediction equals the label."""
    keep = _valid(labels)
    preds = _predictions(logits_or_preds)[keep]
    return _safe_div((preds == labels[keep]).sum().item(), keep.sum().item())


def top_k_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Share of rows whose label is among the ``k`` highest logits (ties broken by torch.topk).

    ``k`` larger than the number of classes counts every row as correct.
    """
    keep = _valid(labels)
    logits, labels = logits[keep], labels[keep]
    if labels.numel() == 0:
        return 0.0
    k = min(k, logits.shape[-1])
    top = logits.topk(k, dim=-1).indices  # [N, k]
    return _safe_div((top == labels[:, None]).any(dim=-1).sum().item(), labels.numel())


def binary_precision_recall_f1(
    logits_or_preds: torch.Tensor, labels: torch.Tensor, positive: int = 1
) -> dict[str, float]:
    """Precision, recall and F1 of the ``positive`` class."""
    keep = _valid(labels)
    preds = _predictions(logits_or_preds)[keep]
    labels = labels[keep]
    tp = ((preds == positive) & (labels == positive)).sum().item()
    fp = ((preds == positive) & (labels != positive)).sum().item()
    fn = ((preds != positive) & (labels == positive)).sum().item()
    precision = _safe_div(tp, tp + fp)
    recall = _safe_div(tp, tp + fn)
    f1 = _safe_div(2 * tp, 2 * tp + fp + fn)
    return {"precision": precision, "recall": recall, "f1": f1}


def macro_f1(logits_or_preds: torch.Tensor, labels: torch.Tensor) -> float:
    """Unweighted mean of per-class F1 over the classes present in the labels or predictions.

    This is scikit-learn's ``f1_score(average="macro")`` with its default label set (classes never
    seen in either are left out rather than counted as 0).
    """
    keep = _valid(labels)
    preds = _predictions(logits_or_preds)[keep]
    labels = labels[keep]
    classes = torch.unique(torch.cat([preds, labels]))
    if classes.numel() == 0:
        return 0.0
    scores = [binary_precision_recall_f1(preds, labels, int(c))["f1"] for c in classes]
    return sum(scores) / len(scores)


def binary_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """``accuracy``, ``precision``, ``recall``, ``f1`` (positive class 1): defect and clone."""
    return {"accuracy": accuracy(logits, labels), **binary_precision_recall_f1(logits, labels)}


def multiclass_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """``top1``, ``top3``, ``macro_f1`` and ``accuracy`` (= ``top1``): exception classification."""
    top1 = accuracy(logits, labels)
    return {
        "top1": top1,
        "top3": top_k_accuracy(logits, labels, 3),
        "macro_f1": macro_f1(logits, labels),
        "accuracy": top1,
    }


def roc_auc(scores: list[float] | torch.Tensor, labels: list[int] | torch.Tensor) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (ties count one half).

    Computed as the Mann-Whitney U statistic with average ranks; 0.5 if one class is absent.
    """
    s = torch.as_tensor(scores, dtype=torch.float64)
    y = torch.as_tensor(labels)
    n_pos = int((y == 1).sum())
    n_neg = int((y == 0).sum())
    if n_pos == 0 or n_neg == 0:
        return 0.5
    # Average 1-based ranks over runs of tied scores.
    _, inverse, counts = torch.unique(s, sorted=True, return_inverse=True, return_counts=True)
    group_rank = counts.cumsum(0).to(torch.float64) - (counts.to(torch.float64) - 1) / 2
    ranks = group_rank[inverse]
    rank_sum = float(ranks[y == 1].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
