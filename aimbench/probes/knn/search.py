"""Weighted cosine k-nearest-neighbour probes (the protocol of DINO's ``eval_knn.py``).

Features are L2-normalised; a query's k most similar training samples vote for their labels with
weight ``exp(similarity / T)`` and the class with the largest summed vote wins (ties: the lowest
class index, as ``argmax`` and scikit-learn's ``KNeighborsClassifier`` break them). One similarity
search with the largest k serves every k of the grid: the top-k neighbours of a smaller k are the
first columns of the sorted top-max(k), so the whole k grid costs one matmul and one ``topk`` per
query chunk. k larger than the training set is clipped to its size; neighbours at exactly equal
similarity are ordered as ``topk`` returns them.

As for every probe, each (layer set x token kind x k) head is scored on val; per layer set the
best is selected and only that one is scored on test.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from numbers import Integral

import torch
import torch.nn.functional as F

from aimbench.probes.features.extract import PooledFeatures, ProbeSource, head_inputs
from aimbench.probes.knn.config import KnnProbeConfig
from aimbench.probes.metrics import score_predictions, secondary_scores
from aimbench.probes.results import HeadScore, LayerResult, ProbeResult, select_per_set, summarise


def _check(train: torch.Tensor, train_labels: torch.Tensor, queries: torch.Tensor, ks: Sequence[int], temperature: float,
           num_classes: int, chunk_size: int) -> list[int]:  # fmt: skip
    """The validated ks as ints; ValueError for anything knn_predict cannot answer."""
    if not ks or any(isinstance(k, bool) or not isinstance(k, Integral) or k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty sequence of positive integers, got {list(ks)}")
    if not temperature > 0:  # also rejects NaN
        raise ValueError(f"temperature must be positive, got {temperature}")
    if num_classes < 1 or chunk_size < 1:
        raise ValueError(f"num_classes and chunk_size must be positive, got {num_classes}, {chunk_size}")
    if train.ndim != 2 or queries.ndim != 2 or train.shape[1] != queries.shape[1]:
        raise ValueError(f"train (N, D) and queries (M, D) need the same dim D, got {tuple(train.shape)}, {tuple(queries.shape)}")
    if train_labels.shape != train.shape[:1]:
        raise ValueError(f"train_labels must have shape ({len(train)},), got {tuple(train_labels.shape)}")
    if len(train_labels) and (int(train_labels.min()) < 0 or int(train_labels.max()) >= num_classes):
        raise ValueError(f"train labels must lie in 0..{num_classes - 1}")
    return [int(k) for k in ks]


def knn_predict(
    train: torch.Tensor,
    train_labels: torch.Tensor,
    queries: torch.Tensor,
    ks: Sequence[int],
    temperature: float,
    num_classes: int,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Predicted labels (len(ks), M), int64, one row per k in the given order, for queries (M, D)
    against a memory bank train (N, D) with labels (N,); any float dtype, computed in fp32 on the
    tensors' device, chunk_size queries at a time (memory O(chunk_size x N)). k > N is clipped to N."""
    ks = _check(train, train_labels, queries, ks, temperature, num_classes, chunk_size)
    predictions = torch.empty(len(ks), len(queries), dtype=torch.int64, device=queries.device)
    if len(queries) == 0:
        return predictions
    if len(train) == 0:
        raise ValueError("the kNN memory bank (train split) is empty")
    bank = F.normalize(train.float(), dim=1)
    labels = train_labels.to(device=bank.device, dtype=torch.int64)
    widest = min(max(ks), len(bank))
    for start in range(0, len(queries), chunk_size):
        chunk = F.normalize(queries[start : start + chunk_size].float(), dim=1)
        similarity, index = (chunk @ bank.T).topk(widest, dim=1)  # the one search: sorted, most similar first
        # exp(sim / T) scaled by the row's exp(-max sim / T): the same argmax, no overflow for a small T
        weights = ((similarity - similarity[:, :1]) / temperature).exp()
        neighbours = labels[index]
        for row, k in enumerate(ks):
            k = min(k, widest)
            votes = torch.zeros(len(chunk), num_classes, device=chunk.device)
            votes.scatter_add_(1, neighbours[:, :k], weights[:, :k])
            predictions[row, start : start + len(chunk)] = votes.argmax(dim=1)  # first maximum: lowest class
    return predictions


def _joined(split: PooledFeatures, reads: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """A head's input: one pooling, or several concatenated (before normalisation)."""
    return split.features[:, list(reads)].reshape(len(split.labels), -1).to(device)


def knn_probes(
    train: PooledFeatures,
    val: PooledFeatures,
    test: PooledFeatures,
    sources: Sequence[ProbeSource],
    num_classes: int,
    config: KnnProbeConfig,
    metric: str = "top1",
    secondary: Sequence[str] = (),
    device: torch.device | str = "cpu",
    on_source: Callable[[int], None] | None = None,
) -> ProbeResult:
    """kNN heads for every (layer set x token kind x k) with the train split as memory bank."""
    device = torch.device(device)
    inputs = head_inputs(sources)
    bank_labels = train.labels.to(device)
    heads: list[HeadScore] = []
    for position, (layer_set, token, reads) in enumerate(inputs):
        bank, queries = _joined(train, reads, device), _joined(val, reads, device)
        predictions = knn_predict(bank, bank_labels, queries, config.ks, config.temperature, num_classes)
        scores = score_predictions(predictions, val.labels, metric, num_classes)
        heads += [HeadScore(layer_set.name, token, {"k": int(k)}, float(score)) for k, score in zip(config.ks, scores)]
        if on_source is not None:
            on_source(position + 1)
    sets = list(dict.fromkeys(layer_set for layer_set, _, _ in inputs))
    layers = []
    for layer_set, chosen in zip(sets, select_per_set(heads, sets)):
        head, (_, _, reads) = heads[chosen], inputs[chosen // len(config.ks)]
        bank, queries = _joined(train, reads, device), _joined(test, reads, device)
        predictions = knn_predict(bank, bank_labels, queries, (int(head.hparams["k"]),), config.temperature, num_classes)
        test_score = float(score_predictions(predictions, test.labels, metric, num_classes)[0])
        extra = secondary_scores(predictions, test.labels, secondary, num_classes)[0]
        layers.append(LayerResult.selected(layer_set, head, test_score, extra, predictions))
    return summarise(heads, layers)
