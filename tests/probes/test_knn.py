"""kNN probes: DINO's weighted cosine vote agrees with scikit-learn, one search serves every k,
and selection never reads test labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from aimbench.cards.backbone_card import CLS, CONCAT, PATCH_MEAN
from aimbench.probes.config import KnnProbeConfig
from aimbench.probes.features import PooledFeatures, ProbeSource
from aimbench.probes.knn import knn_predict, knn_probes
from aimbench.probes.layer_sets import LayerSet

T = 0.07


def _data(n: int = 300, m: int = 120, dim: int = 16, classes: int = 5, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g)
    train_y, query_y = torch.randint(0, classes, (n,), generator=g), torch.randint(0, classes, (m,), generator=g)
    train = centres[train_y] + 1.2 * torch.randn(n, dim, generator=g)
    queries = centres[query_y] + 1.2 * torch.randn(m, dim, generator=g)
    return train, train_y, queries, query_y


def test_predictions_match_scikit_learn_for_every_k() -> None:
    train, train_y, queries, _ = _data()
    ks = (1, 5, 20, 100)
    ours = knn_predict(train, train_y, queries, ks, T, num_classes=5)
    for row, k in enumerate(ks):
        reference = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute", weights=lambda d: np.exp((1 - d) / T))
        expected = reference.fit(train.numpy(), train_y.numpy()).predict(queries.numpy())
        assert ours[row].tolist() == expected.tolist(), k


def test_one_search_serves_every_k_and_invariances() -> None:
    train, train_y, queries, _ = _data(seed=1)
    both = knn_predict(train, train_y, queries, (5, 20), T, 5)
    assert torch.equal(both[0], knn_predict(train, train_y, queries, (5,), T, 5)[0])
    assert torch.equal(both[1], knn_predict(train, train_y, queries, (20,), T, 5)[0])
    assert torch.equal(knn_predict(train, train_y, queries, (10_000,), T, 5), knn_predict(train, train_y, queries, (300,), T, 5))
    assert torch.equal(knn_predict(train * 7, train_y, queries * 0.1, (5, 20), T, 5), both)  # cosine: scale-free
    assert torch.equal(knn_predict(train, train_y, queries, (5, 20), T, 5, chunk_size=7), both)


def test_weighted_vote_by_hand() -> None:
    # query (1, 0); neighbours: class 0 at angle 0 (sim 1), class 1 twice at sim 0.6 and 0.6.
    # unweighted k=3 majority would be class 1; with T=0.1: e^10 = 22026 > 2 e^6 = 807 -> class 0
    train = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.6, -0.8], [-1.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 0])
    assert knn_predict(train, labels, torch.tensor([[1.0, 0.0]]), (3,), 0.1, 2).item() == 0
    # with a very high temperature the vote is a plain majority
    assert knn_predict(train, labels, torch.tensor([[1.0, 0.0]]), (3,), 1e6, 2).item() == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"ks": ()}, "positive"), ({"ks": (0,)}, "positive"), ({"temperature": 0.0}, "temperature"),
     ({"queries": torch.zeros(2, 3)}, "dim"), ({"num_classes": 2}, "labels must lie")],
)  # fmt: skip
def test_bad_arguments(kwargs: dict, message: str) -> None:
    train, train_y, queries, _ = _data(n=20, m=4, classes=5)
    args = {"train": train, "train_labels": train_y, "queries": queries, "ks": (5,), "temperature": T, "num_classes": 5, **kwargs}
    with pytest.raises(ValueError, match=message):
        knn_predict(**args)


def _pooled(seed: int, test_labels: torch.Tensor | None = None) -> tuple[PooledFeatures, ...]:
    """Two layer sets x (patch mean, cls): set "1"'s patch mean carries the classes."""
    splits = []
    for i, (x, y) in enumerate(((_data(seed=seed)[0], _data(seed=seed)[1]), (_data(seed=seed)[2], _data(seed=seed)[3]))):
        noise = torch.randn(len(y), 3, x.shape[1], generator=torch.Generator().manual_seed(seed + i))
        splits.append(PooledFeatures(torch.cat([noise[:, :2], x[:, None], noise[:, 2:]], dim=1), y))
    test = PooledFeatures(splits[1].features, splits[1].labels if test_labels is None else test_labels)
    return splits[0], splits[1], test


SOURCES = [ProbeSource(LayerSet(name, (int(name),)), token) for name in ("0", "1") for token in (PATCH_MEAN, CLS)]


def test_probe_selects_on_val_and_scores_test_for_selected_heads_only() -> None:
    train, val, test = _pooled(3)
    config = KnnProbeConfig(ks=(5, 20))
    result = knn_probes(train, val, test, SOURCES, 5, config)
    assert len(result.heads) == 2 * 3 * 2  # sets x (patch mean, cls, both) x ks
    assert [h.token for h in result.heads[:6]] == [PATCH_MEAN] * 2 + [CLS] * 2 + [CONCAT] * 2
    by_set = {r.layer_set: r for r in result.layers}
    assert by_set["1"].token in (PATCH_MEAN, CONCAT) and by_set["1"].val_score > 0.6 > by_set["0"].val_score
    assert result.best.layer_set == "1" and result.last.layer_set == "1"
    shuffled = test.labels[torch.randperm(len(test.labels), generator=torch.Generator().manual_seed(0))]
    corrupted = knn_probes(*_pooled(3, test_labels=shuffled), SOURCES, 5, config)
    assert corrupted.heads == result.heads
    assert [(r.token, r.hparams) for r in corrupted.layers] == [(r.token, r.hparams) for r in result.layers]
    assert corrupted.best.test_score < result.best.test_score
