"""The intervals and the paired test judged by their error rates on simulated test sets with known truth.

Each check draws >= 1,000 test sets (the paired power check 200 sets of 5,000 examples) from one
fixed generator, so the figures below reproduce exactly; inside the simulations the bootstrap
uses 500 resamples rather than the records' 2,000 (it only adds noise to the interval's ends,
which makes the coverage check stricter, not looser). Figures when written: coverage 93.7 %
(top-1), 93.1 % (mean-per-class), 93.2 % (macro-F1); null rejections 4.5 %; power 91.5 %. With
3,000 sets from another seed the coverage is 94.3 / 94.4 / 94.0 % (500 resamples) and 94.4 / 94.8 /
94.3 % (1,000): the percentile interval runs a little short of 95 % at 1,000 examples, as it is
known to, and the 1,000 sets here land about one standard error (0.7 %) below that.
"""

from __future__ import annotations

import numpy as np
import pytest

from aimbench.stats import paired_bootstrap, score_interval
from tests.stats.simulate import confusion, draw, paired_draw, true_score

SETS = 1000
RESAMPLES = 500
CLASSES = 10
PRIORS = np.linspace(1, 3, CLASSES) / np.linspace(1, 3, CLASSES).sum()  # imbalanced, as real test sets often are
MATRIX = confusion(CLASSES, np.linspace(0.6, 0.95, CLASSES))  # some classes far harder than others


@pytest.mark.parametrize("metric", ["top1", "mean_per_class", "macro_f1"])
def test_the_95_percent_interval_covers_the_true_score_93_to_97_percent_of_the_time(metric: str) -> None:
    truth = true_score(PRIORS, MATRIX, metric)
    rng = np.random.default_rng(20261207)
    covered = 0
    for i in range(SETS):
        labels, predictions = draw(rng, 1000, PRIORS, MATRIX)
        interval = score_interval(predictions, labels, metric, CLASSES, resamples=RESAMPLES, seed=i)
        covered += interval.low <= truth <= interval.high
    assert 0.93 <= covered / SETS <= 0.97, f"{metric}: coverage {covered / SETS:.3f}"


def _rejections(sets: int, n: int, accuracy_a: float, accuracy_b: float, seed: int) -> float:
    """The share of ``sets`` simulated pairs of backbones whose paired bootstrap rejects "no difference" at 0.05."""
    rng = np.random.default_rng(seed)
    rejected = 0
    for i in range(sets):
        labels, a, b = paired_draw(rng, n, CLASSES, accuracy_a, accuracy_b, shared=0.5)
        rejected += paired_bootstrap(a, b, labels, "top1", CLASSES, resamples=RESAMPLES, seed=i).p_value < 0.05
    return rejected / sets


def test_under_the_null_the_paired_test_rejects_at_most_6_percent_of_the_time() -> None:
    rate = _rejections(SETS, 1000, 0.8, 0.8, seed=7)
    assert rate <= 0.06, f"false-positive rate {rate:.3f}"


def test_a_2_point_difference_on_5000_examples_is_found_at_least_90_percent_of_the_time() -> None:
    """Half the examples are equally hard for both (about 16 % of pairs disagree, as between two
    real backbones of 80 % top-1); with independent errors (31 % disagreeing) no paired test has
    this power at 5,000 examples."""
    rate = _rejections(200, 5000, 0.82, 0.80, seed=8)
    assert rate >= 0.90, f"power {rate:.3f}"
