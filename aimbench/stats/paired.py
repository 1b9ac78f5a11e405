"""Paired comparisons of two backbones on the same test examples: is A really better than B?

Two backbones scored on one test set make correlated errors (the hard images are hard for
both), so comparing their two intervals is far too conservative; the difference has to be
measured on the same examples. Three tools, all on fractions in [0, 1] as records store scores:

``paired_bootstrap``
    resamples the test examples once per resample, scores both backbones on it and takes the
    difference A - B: its percentile interval, and the two-sided p-value of the percentile
    test, ``min(1, 2 * min(P*(d <= 0), P*(d >= 0)))`` with the (count + 1) / (R + 1) correction,
    which rejects at level α exactly when 0 lies outside the (1 - α) interval. Works for every
    metric (``aimbench.stats.bootstrap``).
``mcnemar_exact``
    the exact McNemar test for top-1: under the null the discordant pairs (A right and B wrong,
    or the reverse) split 50/50, so the two-sided binomial test on them.
``holm``
    Holm's step-down adjustment for testing several tasks at once: controls the chance of any
    false "A beats B" across the tasks, without assuming the tasks are independent.

``suite_difference`` averages the per-task differences (each task weighs the same, as the
leaderboard's mean does) and bootstraps that mean by resampling each task's examples on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

from aimbench.stats.bootstrap import Scorer
from aimbench.stats.intervals import LEVEL, RESAMPLES, SEED, percentile_bounds

METHOD = "paired-bootstrap-percentile"


@dataclass(frozen=True)
class PairedTest:
    """A minus B in the metric's units (fractions), its interval, the p-value of "no difference", and on how many examples."""

    difference: float
    low: float
    high: float
    p_value: float
    method: str
    n: int


def _differences(pred_a: np.ndarray, pred_b: np.ndarray, labels: np.ndarray, metric: str, num_classes: int, resamples: int,
                 rng: np.random.Generator) -> tuple[float, np.ndarray, int]:  # fmt: skip
    """The observed difference A - B, its ``resamples`` bootstrap replicates, and the number of examples."""
    a, b = np.asarray(pred_a), np.asarray(pred_b)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired predictions must be two (N,) arrays of one test set, got {a.shape} and {b.shape}")
    scorer = Scorer(np.stack([a, b]), labels, metric, num_classes)
    point = scorer.point()
    replicates = scorer.resampled(resamples, rng)
    return float(point[0] - point[1]), replicates[0] - replicates[1], a.shape[0]


def percentile_p_value(replicates: np.ndarray) -> float:
    """Two-sided p-value of "the difference is 0" from its bootstrap replicates (the percentile test)."""
    count = replicates.shape[0]
    below = (np.count_nonzero(replicates <= 0) + 1) / (count + 1)
    above = (np.count_nonzero(replicates >= 0) + 1) / (count + 1)
    return float(min(1.0, 2 * min(below, above)))


def _test(difference: float, replicates: np.ndarray, n: int, level: float) -> PairedTest:
    low, high = percentile_bounds(replicates, level)
    return PairedTest(difference, float(low), float(high), percentile_p_value(replicates), METHOD, n)


def paired_bootstrap(
    pred_a: np.ndarray, pred_b: np.ndarray, labels: np.ndarray, metric: str, num_classes: int, resamples: int = RESAMPLES,
    seed: int = SEED, level: float = LEVEL,
) -> PairedTest:  # fmt: skip
    """A - B on one task: ``pred_a`` and ``pred_b`` (N,) predict the same examples, whose labels are ``labels``."""
    difference, replicates, n = _differences(pred_a, pred_b, labels, metric, num_classes, resamples, np.random.default_rng(seed))
    return _test(difference, replicates, n, level)


def suite_difference(
    per_task: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, str, int]], resamples: int = RESAMPLES, seed: int = SEED,
    level: float = LEVEL,
) -> PairedTest:  # fmt: skip
    """The mean over tasks of A - B; each entry is (pred_a, pred_b, labels, metric, num_classes) of one task.

    Tasks are resampled independently (their test sets are different images), from one generator
    in the order given, so the same tasks in the same order reproduce to the digit. ``n`` is the
    number of examples over all tasks."""
    if not per_task:
        raise ValueError("suite_difference needs at least one task")
    rng = np.random.default_rng(seed)
    measured = [_differences(*task, resamples, rng) for task in per_task]
    difference = float(np.mean([d for d, _, _ in measured]))
    replicates = np.mean([r for _, r, _ in measured], axis=0)
    return _test(difference, replicates, sum(n for _, _, n in measured), level)


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """Two-sided exact McNemar p-value from per-example correctness (booleans, same examples):
    the binomial test of the b = (A right, B wrong) pairs among the b + c discordant ones at 1/2."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"correctness of two backbones on one test set must match, got {a.shape} and {b.shape}")
    only_a, only_b = int(np.count_nonzero(a & ~b)), int(np.count_nonzero(~a & b))
    if only_a + only_b == 0:
        return 1.0  # no discordant pair: nothing tells them apart
    return float(binomtest(only_a, only_a + only_b, 0.5).pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the order given: the i-th smallest is multiplied by (m - i + 1),
    made non-decreasing in that order, and capped at 1."""
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, p[order] * (len(p) - np.arange(len(p))))
    adjusted = np.empty_like(p)
    adjusted[order] = np.maximum.accumulate(scaled) if len(p) else scaled
    return adjusted.tolist()
