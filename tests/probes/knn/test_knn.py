"""kNN probes: DINO's weighted cosine vote agrees with scikit-learn for every k, one search serves
the whole k grid (k clipped to the bank, chunking, scale and fp16 change nothing), a hand-computed
weighted vote, input validation, the config's description, and that selection never reads test labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from aimbench.cards.backbone_card import CLS, CONCAT, PATCH_MEAN
from aimbench.probes.features.extract import PooledFeatures, ProbeSource
from aimbench.probes.features.layer_sets import LayerSet
from aimbench.probes.knn.search import knn_predict, knn_probes
from aimbench.probes.protocol import default_config

T = 0.07


def _data(n: int = 300, m: int = 120, dim: int = 16, classes: int = 5, seed: int = 0, spread: float = 1.2) -> tuple[torch.Tensor, ...]:
    """Gaussian clusters around random class centres: continuous values, so no similarity ties."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g)
    train_y, query_y = torch.randint(0, classes, (n,), generator=g), torch.randint(0, classes, (m,), generator=g)
    train = centres[train_y] + spread * torch.randn(n, dim, generator=g)
    queries = centres[query_y] + spread * torch.randn(m, dim, generator=g)
    return train, train_y, queries, query_y


def test_predictions_match_scikit_learn_for_every_k() -> None:
    train, train_y, queries, _ = _data()
    ks = (1, 5, 20, 100)
    ours = knn_predict(train, train_y, queries, ks, T, num_classes=5)
    assert ours.shape == (4, 120) and ours.dtype == torch.int64
    for row, k in enumerate(ks):
        reference = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute", weights=lambda d: np.exp((1 - d) / T))
        reference.fit(train.numpy(), train_y.numpy())
        top2 = np.sort(reference.predict_proba(queries.numpy()), axis=1)[:, -2:]
        assert (top2[:, 1] - top2[:, 0] > 1e-4).all(), k  # no (near-)tied votes: both tie rules would agree anyway
        assert ours[row].tolist() == reference.predict(queries.numpy()).tolist(), k
    assert len(set(map(tuple, ours.tolist()))) > 1  # the grid is not degenerate: k changes some predictions


def test_one_search_serves_every_k_in_the_given_order(monkeypatch: pytest.MonkeyPatch) -> None:
    train, train_y, queries, _ = _data(seed=1)
    searches: list[int] = []
    topk = torch.Tensor.topk

    def counted(self: torch.Tensor, k: int, *args: object, **kwargs: object) -> object:
        searches.append(k)
        return topk(self, k, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "topk", counted)
    grid = knn_predict(train, train_y, queries, (5, 1, 20, 10_000), T, 5, chunk_size=50)
    assert searches == [300, 300, 300]  # 120 queries in chunks of 50: one top-max(k) search each, k clipped to N = 300
    monkeypatch.undo()
    both = knn_predict(train, train_y, queries, (5, 20), T, 5)
    assert torch.equal(grid[[0, 2]], both)
    assert torch.equal(both[0], knn_predict(train, train_y, queries, (5,), T, 5)[0])
    assert torch.equal(both[1], knn_predict(train, train_y, queries, (20,), T, 5)[0])
    assert torch.equal(knn_predict(train, train_y, queries, (20, 5), T, 5), both.flip(0))
    assert not torch.equal(both[0], both[1])


def test_k_beyond_the_bank_is_clipped_and_empty_queries() -> None:
    train, train_y, queries, _ = _data(seed=2)
    assert torch.equal(knn_predict(train, train_y, queries, (10_000,), T, 5), knn_predict(train, train_y, queries, (300,), T, 5))
    empty = knn_predict(train, train_y, queries[:0], (1, 5, 10_000), T, 5)
    assert empty.shape == (3, 0) and empty.dtype == torch.int64


def test_scale_and_chunking_change_nothing() -> None:
    train, train_y, queries, _ = _data(seed=3)
    ks = (1, 5, 20)
    reference = knn_predict(train, train_y, queries, ks, T, 5)
    assert torch.equal(knn_predict(train * 7, train_y, queries * 0.1, ks, T, 5), reference)  # cosine: scale-free
    assert torch.equal(knn_predict(train, train_y, queries, ks, T, 5, chunk_size=7), reference)
    assert torch.equal(knn_predict(train, train_y, queries, ks, T, 5, chunk_size=1), reference)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_match_fp32_on_separated_data(dtype: torch.dtype) -> None:
    train, train_y, queries, query_y = _data(seed=4, spread=0.3)
    ks = (1, 10, 50)
    full = knn_predict(train, train_y, queries, ks, T, 5)
    assert torch.equal(knn_predict(train.to(dtype), train_y, queries.to(dtype), ks, T, 5), full)
    assert (full == query_y).float().mean() > 0.95


def test_weighted_vote_by_hand() -> None:
    # query (1, 0); bank: class 0 at (1, 0) (sim 1), class 1 at (0, 1) and (0, -1) (sim 0 each), class 1 at (-1, 0) (sim -1).
    # k=3 takes sims 1, 0, 0; T=1: class 0 gets e^1 = 2.718 > class 1's e^0 + e^0 = 2 -> class 0,
    # while the unweighted majority (1 vote vs 2) would pick class 1.
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [-1.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 1])
    query = torch.tensor([[2.0, 0.0]])
    assert knn_predict(train, labels, query, (3,), 1.0, 2).tolist() == [[0]]
    # k=4 adds e^-1 = 0.368 to class 1: 2.368 < 2.718, still class 0; a huge T makes it a plain majority: class 1
    assert knn_predict(train, labels, query, (3, 4), 1.0, 2).tolist() == [[0], [0]]
    assert knn_predict(train, labels, query, (3,), 1e6, 2).tolist() == [[1]]
    # a tiny T must not overflow exp(sim / T) to inf (all votes inf, a tie, class 0): weight 1 vs 2 e^-100 -> class 1
    close = torch.tensor([[1.0, 0.0], [0.99, 0.141], [0.99, -0.141]])
    assert knn_predict(close, torch.tensor([1, 0, 0]), query, (3,), 1e-4, 2).tolist() == [[1]]
    # an exact tie of votes goes to the lowest class index: sims 0 and 0 with labels 1 and 0 -> class 0
    assert knn_predict(train[1:3], torch.tensor([1, 0]), query, (2,), 1.0, 2).tolist() == [[0]]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"ks": ()}, "positive"), ({"ks": (0,)}, "positive"), ({"ks": (5, -1)}, "positive"), ({"ks": (2.5,)}, "positive"),
     ({"temperature": 0.0}, "temperature"), ({"temperature": float("nan")}, "temperature"),
     ({"queries": torch.zeros(2, 3)}, "same dim"), ({"num_classes": 2}, "labels must lie"),
     ({"train_labels": torch.full((20,), -1)}, "labels must lie"),
     ({"train_labels": torch.zeros(19, dtype=torch.int64)}, "shape"),
     ({"chunk_size": 0}, "chunk_size")],
)  # fmt: skip
def test_bad_arguments(kwargs: dict, message: str) -> None:
    train, train_y, queries, _ = _data(n=20, m=4, classes=5)
    args = {"train": train, "train_labels": train_y, "queries": queries, "ks": (5,), "temperature": T, "num_classes": 5, **kwargs}
    with pytest.raises(ValueError, match=message):
        knn_predict(**args)


def test_config_describes_the_protocol() -> None:
    config = default_config("knn")
    assert (config.ks, config.temperature) == ((10, 20, 100, 200), 0.07)
    description = json.loads(json.dumps(config.as_dict()))
    assert description["ks"] == [10, 20, 100, 200] and description["temperature"] == 0.07
    assert description["metric"] == "cosine" and description["weighting"].startswith("exp(sim")


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
    config = default_config("knn", ks=(5, 20))
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


def test_val_and_test_are_scored_in_the_same_precision() -> None:
    """The same images as val and as test (one in fp16, as a cache stores it) give every selected head the same score."""
    train, val, _ = _pooled(4)
    half = PooledFeatures(val.features.half(), val.labels)
    result = knn_probes(train, half, val, SOURCES, 5, default_config("knn"))
    assert [r.val_score for r in result.layers] == [r.test_score for r in result.layers]
