"""Simulated test sets whose true scores are known exactly, for checking intervals and tests by their error rates.

Predictions come from a known generating distribution: class priors ``priors`` and a confusion
matrix ``confusion[true, predicted]`` (each row sums to one). The true score is the metric of
that distribution, the limit of an infinitely large test set: top-1 is sum_c prior_c
confusion_cc, mean-per-class accuracy the mean of confusion_cc, and the F1 of class c is
2 prior_c confusion_cc / (prior_c + sum_k prior_k confusion_kc), averaged over classes.
"""

from __future__ import annotations

import numpy as np


def confusion(num_classes: int, recalls: np.ndarray) -> np.ndarray:
    """A confusion matrix with ``recalls`` on the diagonal and the errors spread evenly over the other classes."""
    matrix = np.repeat(((1 - recalls) / (num_classes - 1))[:, None], num_classes, axis=1)
    np.fill_diagonal(matrix, recalls)
    return matrix


def true_score(priors: np.ndarray, matrix: np.ndarray, metric: str) -> float:
    if metric == "top1":
        return float(priors @ np.diag(matrix))
    if metric == "mean_per_class":
        return float(np.diag(matrix).mean())
    joint = priors[:, None] * matrix  # P(true = t, predicted = p)
    return float(np.mean(2 * np.diag(joint) / (priors + joint.sum(axis=0))))


def draw(rng: np.random.Generator, n: int, priors: np.ndarray, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One test set of ``n`` examples: (labels, predictions)."""
    labels = rng.choice(len(priors), size=n, p=priors)
    cumulative = matrix.cumsum(axis=1)[labels]
    predictions = (rng.random(n)[:, None] > cumulative).sum(axis=1)
    return labels, np.minimum(predictions, len(priors) - 1)


def paired_draw(
    rng: np.random.Generator, n: int, num_classes: int, accuracy_a: float, accuracy_b: float, shared: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two backbones on one test set of ``n`` examples: (labels, predictions of A, predictions of B).

    Errors are correlated as two real backbones' are (hard images are hard for both): with
    probability ``shared`` an example's correctness for both comes from one uniform draw, else
    from one draw each. Wrong predictions are a uniformly chosen other class."""
    labels = rng.integers(0, num_classes, size=n)
    common = rng.random(n)
    linked = rng.random(n) < shared
    outputs = []
    for accuracy in (accuracy_a, accuracy_b):
        draw_ = np.where(linked, common, rng.random(n))
        wrong = (labels + rng.integers(1, num_classes, size=n)) % num_classes
        outputs.append(np.where(draw_ < accuracy, labels, wrong))
    return labels, outputs[0], outputs[1]
