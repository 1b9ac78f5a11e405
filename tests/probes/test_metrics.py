"""Metrics for many heads at once agree with scikit-learn's definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from aimbench.probes.metrics import score_predictions, secondary_scores


def _case(seed: int = 0, heads: int = 4, n: int = 200, classes: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes - 1, (n,), generator=g)  # the last class never occurs as a label
    noise = torch.randint(0, classes, (heads, n), generator=g)
    keep = torch.rand(heads, n, generator=g) < torch.linspace(0.2, 0.9, heads)[:, None]
    return torch.where(keep, labels, noise), labels


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")  # on purpose: a class never labelled
def test_metrics_match_scikit_learn_for_every_head() -> None:
    predictions, labels = _case()
    reference = {
        "top1": accuracy_score,
        "mean_per_class": balanced_accuracy_score,
        "macro_f1": lambda y, p: f1_score(y, p, average="macro"),
    }
    for metric, fn in reference.items():
        ours = score_predictions(predictions, labels, metric, num_classes=7)
        expected = np.array([fn(labels.numpy(), row.numpy()) for row in predictions])
        np.testing.assert_allclose(ours.numpy(), expected, atol=1e-12)
        assert ours.shape == (4,)


def test_hand_computed_values_and_edge_cases() -> None:
    labels = torch.tensor([0, 0, 0, 1])
    predictions = torch.tensor([[0, 0, 0, 0]])  # 3/4 correct; class 1 never predicted
    assert score_predictions(predictions, labels, "top1", 2).item() == 0.75
    assert score_predictions(predictions, labels, "mean_per_class", 2).item() == 0.5  # (1 + 0) / 2
    # F1 class 0: 2*3/(3+4) = 6/7; class 1: 0 -> mean 3/7
    assert score_predictions(predictions, labels, "macro_f1", 2).item() == pytest.approx(3 / 7)
    assert score_predictions(torch.empty(2, 0, dtype=torch.long), torch.empty(0, dtype=torch.long), "top1", 2).tolist() == [0, 0]
    with pytest.raises(ValueError, match="unknown metric"):
        score_predictions(predictions, labels, "auc", 2)


def test_secondary_scores_match_scikit_learn_per_head() -> None:
    generator = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 5, (40,), generator=generator)
    predictions = torch.randint(0, 5, (3, 40), generator=generator)
    scores = secondary_scores(predictions, labels, ("macro_f1", "top1"), 5)
    for row, got in zip(predictions, scores):
        assert got["macro_f1"] == pytest.approx(f1_score(labels.numpy(), row.numpy(), average="macro"))
        assert got["top1"] == pytest.approx(float((row == labels).double().mean()))
    assert secondary_scores(predictions, labels, (), 5) == [{}, {}, {}]
