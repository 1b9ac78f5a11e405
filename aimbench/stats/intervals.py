"""95 % intervals on test scores: the percentile bootstrap over test examples, and over seeds where several exist.

Why the percentile bootstrap and not a normal approximation: mean-per-class accuracy and
macro-F1 have no simple standard error (a class's recall is a ratio, F1 a ratio of counts that
move together), and a top-1 near 100 % is bounded; resampling the test examples and recomputing
the metric as it is defined (``aimbench.stats.bootstrap``) needs no formula per metric. Why not
BCa: its acceleration needs a jackknife over the N examples (50,000 refits on ImageNet), and the
simulations in ``tests/stats`` show the plain percentile interval already covers 93-97 % on
every metric at the test-set sizes aimbench sees.

Seeds combined: ``--seeds`` varies head initialisation and data order, never the test split,
so S seed records of one cell predict the *same* test examples. Each bootstrap resample draws
the examples once (shared by all seeds: their errors are correlated through the examples) and
draws S seeds with replacement; its score is the mean over the drawn seeds of each seed's
metric on the drawn examples. The point estimate is the mean over seeds.

Fixed defaults: :data:`RESAMPLES` resamples from seed :data:`SEED`, recorded in every record
(``interval``), so an interval is reproducible to the digit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aimbench.stats.bootstrap import Scorer, as_rows, seed_weights

METHOD = "bootstrap-percentile"
RESAMPLES = 2000  # ~1.5 s for ImageNet's 50k test images x 26 layer sets in top-1 (benchmarks/bootstrap_cost.py): small next to a cell
SEED = 0
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A two-sided interval on a score, in the score's units (fractions in [0, 1]), and how it was drawn."""

    low: float
    high: float
    method: str
    resamples: int
    seed: int


def percentile_bounds(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """The (1 - level) / 2 and (1 + level) / 2 quantiles of ``samples`` along its last axis."""
    tail = (1 - level) / 2
    low, high = np.quantile(samples, [tail, 1 - tail], axis=-1)
    return low, high


def layer_intervals(
    predictions: np.ndarray, labels: np.ndarray, metric: str, num_classes: int, resamples: int = RESAMPLES, seed: int = SEED,
    level: float = LEVEL,
) -> list[Interval]:  # fmt: skip
    """One interval per row of ``predictions`` (L, N), every row scored on the same resamples: what a
    record stores for its layer sets when the cell finishes."""
    scorer = Scorer(predictions, labels, metric, num_classes)
    low, high = percentile_bounds(scorer.resampled(resamples, np.random.default_rng(seed)), level)
    return [Interval(float(lo), float(hi), METHOD, resamples, seed) for lo, hi in zip(low, high)]


def score_interval(
    predictions: np.ndarray, labels: np.ndarray, metric: str, num_classes: int, resamples: int = RESAMPLES, seed: int = SEED,
    level: float = LEVEL,
) -> Interval:  # fmt: skip
    """The interval of one score: ``predictions`` (N,) for one run, or (S, N) for S seeds of one cell on
    the same test examples (examples and seeds both resampled; see the module's docstring)."""
    rows = as_rows(predictions)
    rng = np.random.default_rng(seed)
    per_seed = Scorer(rows, labels, metric, num_classes).resampled(resamples, rng)  # (S, R)
    combined = np.einsum("rs,sr->r", seed_weights(rows.shape[0], resamples, rng), per_seed)
    low, high = percentile_bounds(combined, level)
    return Interval(float(low), float(high), METHOD, resamples, seed)


def point_score(predictions: np.ndarray, labels: np.ndarray, metric: str, num_classes: int) -> float:
    """The score :func:`score_interval` is an interval on: the metric, averaged over seeds for (S, N)."""
    return float(Scorer(predictions, labels, metric, num_classes).point().mean())
