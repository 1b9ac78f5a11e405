"""Classification metrics for many heads at once, from predicted labels.

A task card names its metric; every head of a probe is scored with it, on val for selection and
(selected heads only) on test. ``top1`` is plain accuracy; ``mean_per_class`` averages the recall
of every class present in the labels (the metric of long-tailed or imbalanced sets such as
iWildCam-style benchmarks); ``macro_f1`` averages per-class F1 over the classes present in the
labels or the predictions, as scikit-learn's ``f1_score(average="macro")`` does. Scores are
fractions in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from aimbench.cards.task_card import METRICS


def score_predictions(predictions: torch.Tensor, labels: torch.Tensor, metric: str, num_classes: int) -> torch.Tensor:
    """Score every row of ``predictions`` (H, N) against ``labels`` (N,): returns (H,) float64."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric '{metric}'; one of {', '.join(METRICS)}")
    predictions = predictions.to(torch.int64)
    labels = labels.to(predictions.device, torch.int64)
    heads, n = predictions.shape
    if n == 0:
        return torch.zeros(heads, dtype=torch.float64)
    correct = (predictions == labels).to(torch.float64)
    if metric == "top1":
        return correct.mean(dim=1).cpu()
    # per-class counts for every head at once: (H, C)
    true_per_class = torch.bincount(labels, minlength=num_classes).to(torch.float64)
    offsets = torch.arange(heads, device=predictions.device)[:, None] * num_classes
    hits = torch.bincount((labels + offsets)[correct.bool()], minlength=heads * num_classes).view(heads, num_classes)
    predicted = torch.bincount((predictions + offsets).reshape(-1), minlength=heads * num_classes).view(heads, num_classes)
    hits, predicted = hits.to(torch.float64), predicted.to(torch.float64)
    if metric == "mean_per_class":
        present = true_per_class > 0
        return (hits[:, present] / true_per_class[present]).mean(dim=1).cpu()
    f1 = 2 * hits / (true_per_class + predicted).clamp_min(1)  # F1 = 2TP / (2TP + FP + FN)
    present = (true_per_class[None] + predicted) > 0
    return ((f1 * present).sum(dim=1) / present.sum(dim=1)).cpu()


def secondary_scores(predictions: torch.Tensor, labels: torch.Tensor, metrics: Sequence[str], num_classes: int) -> list[dict[str, float]]:
    """For every row of ``predictions`` (H, N), the task's secondary metrics (e.g. WILDS' official
    macro F1 for iWildCam): reported beside the primary test score, never used for selection."""
    per_metric = {m: score_predictions(predictions, labels, m, num_classes) for m in metrics}
    return [{m: float(scores[i]) for m, scores in per_metric.items()} for i in range(predictions.shape[0])]
