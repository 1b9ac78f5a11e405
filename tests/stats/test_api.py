"""The statistics API the store and the reports call: exact where it can be checked against a known answer, reproducible to the digit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import binomtest

from aimbench.probes.metrics import score_predictions
from aimbench.stats import holm, mcnemar_exact, paired_bootstrap, score_interval, suite_difference
from aimbench.stats.bootstrap import METRICS, Scorer, count_chunks
from aimbench.stats.intervals import layer_intervals, point_score


def _task(seed: int, n: int = 400, classes: int = 7, accuracy: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    return labels, np.where(rng.random(n) < accuracy, labels, rng.integers(0, classes, n))


@pytest.mark.parametrize("metric", METRICS)
def test_resampled_metrics_are_the_probes_metrics_on_the_resampled_examples(metric: str) -> None:
    """Counts of one everywhere are the test set itself; a count matrix row is the multiset it draws."""
    labels, predictions = _task(0)
    rows = np.stack([predictions, np.roll(predictions, 3)])
    scorer = Scorer(rows, labels, metric, 7)
    reference = score_predictions(torch.as_tensor(rows), torch.as_tensor(labels), metric, 7).numpy()
    np.testing.assert_allclose(scorer.point(), reference, rtol=0, atol=1e-12)
    [counts] = list(count_chunks(len(labels), 1, np.random.default_rng(5)))
    drawn = np.repeat(np.arange(len(labels)), counts[0].astype(int))  # the resample as explicit examples
    expected = score_predictions(torch.as_tensor(rows[:, drawn]), torch.as_tensor(labels[drawn]), metric, 7).numpy()
    np.testing.assert_allclose(scorer.score(counts)[:, 0], expected, rtol=0, atol=1e-9)


def test_a_resample_missing_a_class_averages_recall_over_the_classes_it_has() -> None:
    labels, predictions = np.array([0, 0, 1, 2]), np.array([0, 1, 1, 0])
    counts = np.array([[1, 1, 2, 0]], dtype=np.float32)  # class 2 not drawn: recall of class 0 (1/2) and 1 (1) only
    assert Scorer(predictions, labels, "mean_per_class", 3).score(counts)[0, 0] == pytest.approx(0.75)


def test_intervals_reproduce_to_the_digit_and_change_with_the_seed() -> None:
    labels, predictions = _task(1)
    first, again = score_interval(predictions, labels, "macro_f1", 7, seed=3), score_interval(predictions, labels, "macro_f1", 7, seed=3)
    assert first == again and (first.method, first.resamples, first.seed) == ("bootstrap-percentile", 2000, 3)
    assert score_interval(predictions, labels, "macro_f1", 7, seed=4) != first
    assert first.low < point_score(predictions, labels, "macro_f1", 7) < first.high


def test_a_record_s_layer_intervals_are_the_single_score_intervals() -> None:
    """Every layer set is scored on the same resamples; with one seed, seeds are not resampled at all."""
    labels, predictions = _task(2)
    rows = np.stack([predictions, np.roll(predictions, 1)])
    together = layer_intervals(rows, labels, "top1", 7, resamples=300)
    assert together[0] == score_interval(predictions, labels, "top1", 7, resamples=300)
    assert together[0] == score_interval(predictions[None], labels, "top1", 7, resamples=300)


def test_seeds_that_disagree_widen_the_interval() -> None:
    labels, predictions = _task(3)
    rng = np.random.default_rng(0)
    noisy = np.stack([np.where(rng.random(len(labels)) < share, labels, predictions) for share in (0.0, 0.1, 0.2)])
    one = score_interval(noisy[1], labels, "top1", 7)
    seeds = score_interval(noisy, labels, "top1", 7)
    assert seeds.high - seeds.low > one.high - one.low
    assert seeds.low < point_score(noisy, labels, "top1", 7) < seeds.high


def test_mcnemar_is_scipy_s_exact_binomial_test_on_the_discordant_pairs() -> None:
    rng = np.random.default_rng(4)
    for n, p_a, p_b in [(50, 0.7, 0.7), (300, 0.8, 0.75), (2000, 0.9, 0.88), (17, 0.5, 0.2)]:
        a, b = rng.random(n) < p_a, rng.random(n) < p_b
        only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
        assert mcnemar_exact(a, b) == binomtest(only_a, only_a + only_b, 0.5).pvalue
    assert mcnemar_exact(np.ones(5, bool), np.ones(5, bool)) == 1.0  # no discordant pair
    assert mcnemar_exact(np.array([1, 1, 1, 1, 1, 1], bool), np.zeros(6, bool)) == pytest.approx(2 * 0.5**6)


def test_holm_adjusts_as_by_hand_and_stays_monotone() -> None:
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> 0.06 (never below the previous)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == [1.0, 1.0] and holm([]) == [] and holm([0.2]) == [0.2]


def test_the_paired_bootstrap_measures_a_minus_b_in_record_units() -> None:
    labels, a = _task(5, n=2000, accuracy=0.9)
    b = np.where(np.arange(len(labels)) % 5 == 0, (labels + 1) % 7, a)  # B wrong on a fifth more
    test = paired_bootstrap(a, b, labels, "top1", 7, seed=1)
    expected = float((a == labels).mean() - (b == labels).mean())
    assert test.difference == pytest.approx(expected) and test.low < expected < test.high and test.n == 2000
    assert test.p_value < 0.001 and test.method == "paired-bootstrap-percentile"
    assert paired_bootstrap(a, b, labels, "top1", 7, seed=1) == test
    same = paired_bootstrap(a, a, labels, "top1", 7)
    assert (same.difference, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_the_suite_difference_is_the_mean_of_the_task_differences() -> None:
    tasks = []
    for seed, metric in [(6, "top1"), (7, "mean_per_class"), (8, "macro_f1")]:
        labels, a = _task(seed)
        _, b = _task(seed + 10)
        tasks.append((a, b, labels, metric, 7))
    suite = suite_difference(tasks, resamples=500, seed=2)
    alone = [paired_bootstrap(*task, resamples=500).difference for task in tasks]
    assert suite.difference == pytest.approx(np.mean(alone)) and suite.n == 1200
    assert suite.low < suite.difference < suite.high
    assert suite_difference(tasks[:1], resamples=500, seed=2) == paired_bootstrap(*tasks[0], resamples=500, seed=2)
