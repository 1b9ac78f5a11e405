"""The bootstrap engine: many rows of class predictions scored on many resamples of the test examples at once.

A resample of N test examples drawn with replacement is the same thing as a vector of counts
(how often each example was drawn, summing to N), so every metric of a resample is a weighted
metric of the original examples. The counts of R resamples are drawn as one (R, N) index matrix
and turned into an (R, N) count matrix, and every metric then becomes matrix products: top-1 is
``correct @ counts.T / N``; the per-class counts that mean-per-class accuracy and macro-F1 need
are a sparse one-hot (classes x examples) times the dense counts. So scoring 26 layer sets on
ImageNet's 50,000 test images costs a few BLAS calls per chunk of resamples, not 26 x R Python
loops, and every row (layer set, seed, backbone) is scored on the *same* resamples, which is what
makes paired differences and seeds-combined intervals possible.

The metrics follow ``aimbench.probes.metrics`` exactly on the resampled multiset of examples
(with all counts equal to one they give the same numbers): ``top1`` is accuracy;
``mean_per_class`` averages recall over the classes present in the resample's labels (a
resample missing a class averages over the classes it has, as the metric does on a test set
missing one); ``macro_f1`` averages 2TP / (2TP + FP + FN) over the classes present in the
resample's labels or predictions. Scores are fractions in [0, 1], as records store them.

Resamples are drawn from ``numpy.random.default_rng(seed)`` in fixed chunks, so the same
inputs and seed give the same numbers to the last digit, on any machine with the same numpy.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from scipy import sparse

METRICS = ("top1", "mean_per_class", "macro_f1")  # what aimbench.cards.task_card.METRICS names: scored here on resamples
CHUNK_ELEMENTS = 1 << 23  # index draws per chunk (~8M: 32 MB of int32 indices), whatever N and R are
BLAS_FROM = 1 << 24  # multiply-adds from which top-1 goes through BLAS (ImageNet's 26 layer sets do; simulations do not)
ROW_BY_ROW = 8192  # from this many examples on, resamples are counted row by row (:func:`_counts`)


def check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric '{metric}'; one of {', '.join(METRICS)}")


def as_rows(predictions: np.ndarray) -> np.ndarray:
    """``predictions`` as a 2-D int64 array (rows x examples): a single (N,) row becomes (1, N)."""
    array = np.asarray(predictions)
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2:
        raise ValueError(f"expected predictions shaped (N,) or (rows, N), got {array.shape}")
    return array.astype(np.int64, copy=False)


def count_chunks(n: int, resamples: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Count matrices (r, n) of float32 for ``resamples`` bootstrap resamples of ``n`` examples, in chunks."""
    step = max(1, CHUNK_ELEMENTS // max(n, 1))
    for start in range(0, resamples, step):
        r = min(step, resamples - start)
        yield _counts(rng.integers(0, n, size=(r, n), dtype=np.int64 if n >= 2**31 else np.int32), n)


def _counts(drawn: np.ndarray, n: int) -> np.ndarray:
    """How often each of ``n`` examples occurs in each row of ``drawn``. Small rows share one bincount
    (row i's draws land in bins [i*n, (i+1)*n)); long rows are counted one by one, where the bins of
    a row stay in cache (about 5x faster at n = 50,000)."""
    r = drawn.shape[0]
    if n <= ROW_BY_ROW:
        flat = drawn.astype(np.int64) + np.arange(r)[:, None] * n
        return np.bincount(flat.ravel(), minlength=r * n).reshape(r, n).astype(np.float32)
    counts = np.empty((r, n), dtype=np.float32)
    for i in range(r):
        counts[i] = np.bincount(drawn[i], minlength=n)
    return counts


def _one_hot(classes: np.ndarray, num_classes: int, values: np.ndarray | None = None) -> sparse.csr_matrix:
    """A sparse (rows * num_classes, N) matrix with ``values`` (default 1) at (row * C + classes[row, n], n)."""
    rows, n = classes.shape
    data = np.ones(rows * n, dtype=np.float32) if values is None else values.ravel().astype(np.float32)
    index = (classes + np.arange(rows)[:, None] * num_classes).ravel()
    return sparse.csr_matrix((data, (index, np.tile(np.arange(n), rows))), shape=(rows * num_classes, n))


class Scorer:
    """Rows of predictions against one label vector, ready to score any number of count matrices.

    The one-hot matrices depend only on the predictions, so they are built once and reused for
    every chunk of resamples (and, through :meth:`score`, for the unresampled point estimate)."""

    def __init__(self, predictions: np.ndarray, labels: np.ndarray, metric: str, num_classes: int) -> None:
        check_metric(metric)
        self.predictions = as_rows(predictions)
        self.labels = np.asarray(labels).astype(np.int64, copy=False)
        rows, n = self.predictions.shape
        if self.labels.shape != (n,):
            raise ValueError(f"labels shaped {self.labels.shape} do not match predictions shaped {self.predictions.shape}")
        highest = max(int(self.labels.max(initial=-1)), int(self.predictions.max(initial=-1)))
        self.metric, self.num_classes, self.rows, self.n = metric, max(num_classes, highest + 1), rows, n
        correct = self.predictions == self.labels
        if metric == "top1":
            self.correct = correct.astype(np.float32)
            return
        self.true = _one_hot(self.labels[None], self.num_classes)  # (C, N)
        self.hits = _one_hot(np.broadcast_to(self.labels, (rows, n)), self.num_classes, correct)  # (rows*C, N)
        if metric == "macro_f1":
            self.predicted = _one_hot(self.predictions, self.num_classes)  # (rows*C, N)

    def score(self, counts: np.ndarray) -> np.ndarray:
        """Scores (rows, r) of every row on each of the ``counts`` (r, N) resamples, float64."""
        counts = np.asarray(counts, dtype=np.float32)
        if self.metric == "top1":
            if self.rows * counts.size < BLAS_FROM:  # small: threaded BLAS spends ~100x the work starting its threads
                return np.einsum("rn,kn->kr", counts, self.correct).astype(np.float64) / max(self.n, 1)
            return (counts @ self.correct.T).T.astype(np.float64) / max(self.n, 1)  # this way round BLAS reads both contiguously
        weights = np.ascontiguousarray(counts.T)  # (N, r)
        r = weights.shape[1]
        true = (self.true @ weights).astype(np.float64)  # (C, r)
        hits = (self.hits @ weights).astype(np.float64).reshape(self.rows, self.num_classes, r)
        if self.metric == "mean_per_class":
            present = true > 0
            recall = np.divide(hits, true, out=np.zeros_like(hits), where=present)
            return recall.sum(axis=1) / np.maximum(present.sum(axis=0), 1)
        predicted = (self.predicted @ weights).astype(np.float64).reshape(self.rows, self.num_classes, r)
        denominator = true + predicted  # 2TP + FP + FN
        present = denominator > 0
        f1 = np.divide(2 * hits, denominator, out=np.zeros_like(hits), where=present)
        return f1.sum(axis=1) / np.maximum(present.sum(axis=1), 1)

    def point(self) -> np.ndarray:
        """The scores (rows,) on the test set itself (every example counted once)."""
        return self.score(np.ones((1, self.n), dtype=np.float32))[:, 0]

    def resampled(self, resamples: int, rng: np.random.Generator) -> np.ndarray:
        """Scores (rows, resamples) on ``resamples`` bootstrap resamples drawn from ``rng``, shared by every row."""
        if self.n == 0:
            return np.zeros((self.rows, resamples))
        return np.concatenate([self.score(counts) for counts in count_chunks(self.n, resamples, rng)], axis=1)


def seed_weights(seeds: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, seeds) weights summing to one per resample: how often each seed was drawn, over ``seeds``.

    With one seed every weight is 1, and no random numbers are drawn (a one-seed interval is the
    same whether or not seeds are resampled)."""
    if seeds == 1:
        return np.ones((resamples, 1))
    drawn = rng.integers(0, seeds, size=(resamples, seeds)) + np.arange(resamples)[:, None] * seeds
    return np.bincount(drawn.ravel(), minlength=resamples * seeds).reshape(resamples, seeds) / seeds
