"""Linear probes on synthetic pooled features: selection by val only, determinism, the lr x wd grid,
concatenated heads."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import count_forwards

from aimbench.cards.backbone_card import CLS, CONCAT, PATCH_MEAN
from aimbench.probes.checkpoint import Checkpointing
from aimbench.probes.features.extract import PooledFeatures, ProbeSource, extract_pooled, feature_sources, probe_inputs
from aimbench.probes.features.layer_sets import LayerSet, blocks_needed, parse_layer_sets
from aimbench.probes.features.views import online_probe_inputs
from aimbench.probes.linear import training as linear
from aimbench.probes.linear.halving import rung_steps
from aimbench.probes.linear.heads import LinearHeads
from aimbench.probes.linear.training import train_linear_probes
from aimbench.probes.protocol import default_config
from aimbench.probes.results import HeadScore, LayerResult, ProbeResult
from aimbench.probes.schedule import warmup_cosine

N_CLASSES = 3
DIM = 8
LAYERS = 3
FAST = default_config("linear", "aim-v1", learning_rates=(1e-2, 1e-1), weight_decays=(1e-4,), epochs=20, batch_size=64)


def src(layer: int, token: str = PATCH_MEAN) -> ProbeSource:
    return ProbeSource(LayerSet(str(layer), (layer,)), token)


SOURCES = [src(layer) for layer in range(LAYERS)]


def _split(n: int, generator: torch.Generator, signal: dict[int, float], centres: torch.Tensor) -> PooledFeatures:
    """Gaussian noise in every source; source ``s`` gets ``signal[s] * centres[s, label]`` added."""
    labels = torch.randint(0, N_CLASSES, (n,), generator=generator)
    features = torch.randn(n, centres.shape[0], DIM, generator=generator)
    for source, strength in signal.items():
        features[:, source] += strength * centres[source, labels]
    return PooledFeatures(features, labels)


def _centres(n_sources: int, seed: int = 100) -> torch.Tensor:
    return torch.randn(n_sources, N_CLASSES, DIM, generator=torch.Generator().manual_seed(seed))


def _three_splits(signal: dict[int, float], n: int = 300, n_sources: int = LAYERS, seed: int = 0) -> tuple[PooledFeatures, ...]:
    generator = torch.Generator().manual_seed(seed)
    centres = _centres(n_sources)
    return tuple(_split(n, generator, signal, centres) for _ in range(3))


def test_informative_layer_is_selected() -> None:
    train, val, test = _three_splits({1: 1.5})
    result = train_linear_probes(train, val, test, SOURCES, N_CLASSES, FAST, seed=0)

    assert result.best.layer == 1
    assert result.best.val_score > 0.85
    assert result.best.test_score > 0.85
    assert [r.layer for r in result.layers] == [0, 1, 2]
    assert result.last == result.layers[-1]
    for r in result.layers:
        if r.layer != 1:
            assert r.val_score < 0.5  # chance is 1/3
            assert r.test_score < 0.5
        assert r.hparams["lr"] in FAST.learning_rates
        assert r.hparams["weight_decay"] == FAST.weight_decays[0]
    # one head per (source, lr, wd), grid order: layer set, token, lr, wd
    assert [(h.layer_set, h.token, h.hparams["lr"]) for h in result.heads] == [
        (s.layer_set.name, s.token, lr) for s in SOURCES for lr in FAST.learning_rates
    ]


def test_each_layer_keeps_its_best_val_head() -> None:
    sources = [src(layer, token) for layer in range(2) for token in (PATCH_MEAN, CLS)]
    # layer 0: cls informative, patch mean not; layer 1: patch mean informative
    train, val, test = _three_splits({1: 1.5, 2: 1.0}, n_sources=4)
    config = default_config("linear", "aim-v1", learning_rates=(1e-3, 3e-2, 3e-1), weight_decays=(0.0,), epochs=15, batch_size=64)
    result = train_linear_probes(train, val, test, sources, N_CLASSES, config, seed=1)

    tokens = (PATCH_MEAN, CLS, CONCAT)
    for layer_result in result.layers:
        # selection's grid order within a layer set: token kind, then lr, then wd; the first best val wins
        own = sorted(
            (h for h in result.heads if h.layer_set == layer_result.layer_set),
            key=lambda h: (tokens.index(h.token), config.learning_rates.index(h.hparams["lr"])),
        )
        assert [h.token for h in own].count(CONCAT) == len(config.learning_rates) * len(config.weight_decays)
        own = [h for h in own if h.stopped_at is None]  # selection is among the heads trained to the end (halving stops the rest)
        best_val = max(h.val_score for h in own)
        first_best = next(h for h in own if h.val_score == best_val)
        assert (layer_result.token, layer_result.hparams, layer_result.val_score) == (
            first_best.token,
            first_best.hparams,
            first_best.val_score,
        )
    assert result.layers[0].token in (CLS, CONCAT)
    assert result.layers[1].token in (PATCH_MEAN, CONCAT)
    assert result.best == max(result.layers, key=lambda r: (r.val_score, -r.layer))


def test_ties_go_to_the_first_candidate_in_grid_order() -> None:
    # constant features: every head can only learn its bias, so all heads predict the same class
    sources = [src(layer, token) for layer in range(3) for token in (PATCH_MEAN, CLS)]
    generator = torch.Generator().manual_seed(0)
    splits = [PooledFeatures(torch.zeros(90, len(sources), DIM), torch.randint(0, N_CLASSES, (90,), generator=generator)) for _ in range(3)]
    config = default_config("linear", "aim-v1", learning_rates=(1e-2, 1e-1), epochs=2, batch_size=32, grid_search="full")
    result = train_linear_probes(*splits, sources, N_CLASSES, config, seed=0)
    assert len({h.val_score for h in result.heads}) == 1  # a genuine tie everywhere
    assert [(r.token, r.hparams) for r in result.layers] == [(PATCH_MEAN, {"lr": 1e-2, "weight_decay": 0.0})] * 3
    assert result.best.layer == 0
    assert result.last.layer == 2


def _val_vs_test_data() -> tuple[PooledFeatures, PooledFeatures, PooledFeatures]:
    """Layer 0 is strongly informative on train/val, layer 1 weakly; on test layer 0 carries no signal."""
    generator = torch.Generator().manual_seed(7)
    centres = _centres(LAYERS, seed=8)
    train = _split(300, generator, {0: 2.0, 1: 0.6}, centres)
    val = _split(300, generator, {0: 2.0, 1: 0.6}, centres)
    test = _split(300, generator, {1: 0.6}, centres)
    return train, val, test


def test_selection_follows_val_not_test() -> None:
    train, val, test = _val_vs_test_data()
    result = train_linear_probes(train, val, test, SOURCES, N_CLASSES, FAST, seed=0)
    by_layer = {r.layer: r for r in result.layers}

    # test would prefer layer 1, val prefers layer 0; selection follows val
    assert by_layer[1].test_score > by_layer[0].test_score + 0.1
    assert by_layer[0].val_score > by_layer[1].val_score + 0.1
    assert result.best.layer == 0
    assert result.best == by_layer[0]

    # per-head scores carry val only
    head_fields = {f.name for f in dataclasses.fields(HeadScore)}
    assert "val_score" in head_fields
    assert not any("test" in name for name in head_fields)


@pytest.mark.parametrize("grid_search", ["full", "halving"])
def test_test_is_scored_only_for_selected_heads(monkeypatch: pytest.MonkeyPatch, grid_search: str) -> None:
    train, val, test = _val_vs_test_data()
    calls: list[tuple[str, int]] = []
    original_all, original_one = linear._predict, linear._predict_head
    test_x = (test.features - train.features.mean(0)) / train.features.std(0)

    def split_of(x: torch.Tensor) -> str:
        return "test" if x.shape == test_x.shape and torch.allclose(x, test_x, atol=1e-5) else "val"

    def spy_all(x, labels, heads, names):  # type: ignore[no-untyped-def]
        calls.append((split_of(x), len(heads.order())))
        return original_all(x, labels, heads, names)

    def spy_one(x, heads, head, name):  # type: ignore[no-untyped-def]
        calls.append((split_of(x), 1))
        return original_one(x, heads, head, name)

    monkeypatch.setattr(linear, "_predict", spy_all)
    monkeypatch.setattr(linear, "_predict_head", spy_one)
    config = dataclasses.replace(FAST, grid_search=grid_search)
    train_linear_probes(train, val, test, SOURCES, N_CLASSES, config, seed=0)
    # val is predicted by the heads still training (at each halving rung, then at the end); test by one head per layer set, the selected one
    heads = LAYERS * len(FAST.learning_rates) * len(FAST.weight_decays)
    rungs = len(rung_steps(FAST.epochs * -(-len(train.labels) // FAST.batch_size))) if grid_search == "halving" else 0
    assert [split for split, _ in calls] == ["val"] * (rungs + 1) + ["test"] * LAYERS
    assert calls[0][1] == heads and all(n == 1 for _, n in calls[rungs + 1 :])
    if grid_search == "halving":
        assert calls[rungs][1] < heads  # the last val pass scores the survivors only


def _selection(result: ProbeResult) -> list[tuple]:
    return [(r.layer_set, r.token, r.hparams, r.val_score) for r in result.layers]


@pytest.mark.parametrize("corruption", ["permute", "shift", "constant"])
def test_test_labels_change_only_test_scores(corruption: str) -> None:
    sources = [src(layer, token) for layer in range(LAYERS) for token in (PATCH_MEAN, CLS)]
    train, val, test = _three_splits({0: 0.4, 3: 1.0, 4: 1.5}, n_sources=len(sources), seed=3)
    config = default_config("linear", "aim-v1", learning_rates=(1e-3, 1e-2, 1e-1), epochs=10, batch_size=64)
    clean = train_linear_probes(train, val, test, sources, N_CLASSES, config, seed=5)

    labels = test.labels
    if corruption == "permute":
        bad_labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    elif corruption == "shift":
        bad_labels = (labels + 1) % N_CLASSES
    else:
        bad_labels = torch.zeros_like(labels)
    corrupted = train_linear_probes(train, val, PooledFeatures(test.features, bad_labels), sources, N_CLASSES, config, seed=5)

    assert corrupted.heads == clean.heads  # every head's val score, bit for bit
    assert _selection(corrupted) == _selection(clean)
    assert (corrupted.best.layer, corrupted.best.token, corrupted.best.hparams) == (
        clean.best.layer,
        clean.best.token,
        clean.best.hparams,
    )
    assert [r.test_score for r in corrupted.layers] != [r.test_score for r in clean.layers]
    # the informative layer's test score collapses once test labels are broken
    assert clean.best.test_score > 0.8
    assert corrupted.best.test_score < 0.6


def test_test_features_do_not_influence_training() -> None:
    train, val, test = _three_splits({1: 1.5})
    clean = train_linear_probes(train, val, test, SOURCES, N_CLASSES, FAST, seed=0)
    noisy = PooledFeatures(test.features * 100 + 5, test.labels)
    shifted = train_linear_probes(train, val, noisy, SOURCES, N_CLASSES, FAST, seed=0)
    assert shifted.heads == clean.heads
    assert _selection(shifted) == _selection(clean)


# --- heads are independent of the grid they are trained in ----------------------------------
#
# Heads' parameters are disjoint, AdamW is per-parameter, every head starts at zero and the data
# order depends only on (seed, n). So each head of a (layers x tokens x lrs) grid must score
# exactly as the same head trained alone, with mini-batches, for every lr and every layer.


def _scores(result: ProbeResult) -> dict[tuple[str, str, float, float], float]:
    return {(h.layer_set, h.token, h.hparams["lr"], h.hparams["weight_decay"]): h.val_score for h in result.heads}


@pytest.mark.parametrize("batch_size", [64, 1024])
def test_every_head_of_the_grid_matches_training_it_alone(batch_size: int) -> None:
    train, val, test = _three_splits({1: 1.0, 2: 0.3})
    grid = default_config(
        "linear", "aim-v1", learning_rates=(1e-2, 3e-1), weight_decays=(0.0, 1e-1), epochs=20, batch_size=batch_size, grid_search="full"
    )
    together = _scores(train_linear_probes(train, val, test, SOURCES, N_CLASSES, grid, seed=0))
    alone: dict[tuple[str, str, float, float], float] = {}
    for i, source in enumerate(SOURCES):
        one_source = [PooledFeatures(split.features[:, i : i + 1], split.labels) for split in (train, val, test)]
        for lr in grid.learning_rates:
            for wd in grid.weight_decays:
                config = dataclasses.replace(grid, learning_rates=(lr,), weight_decays=(wd,))
                alone.update(_scores(train_linear_probes(*one_source, [source], N_CLASSES, config, seed=0)))
    assert together.keys() == alone.keys()
    for key in together:
        assert together[key] == pytest.approx(alone[key], abs=1e-6), key


# --- determinism ----------------------------------------------------------------------------


def test_same_seed_same_result() -> None:
    train, val, test = _three_splits({1: 1.0, 2: 0.3})
    a = train_linear_probes(train, val, test, SOURCES, N_CLASSES, FAST, seed=11)
    b = train_linear_probes(train, val, test, SOURCES, N_CLASSES, FAST, seed=11)
    assert a == b
    assert isinstance(a.best, LayerResult)


def test_other_seed_may_differ_but_selects_the_same_layer() -> None:
    train, val, test = _three_splits({1: 1.5})
    results = [train_linear_probes(train, val, test, SOURCES, N_CLASSES, FAST, seed=seed) for seed in (0, 1, 2)]
    # different seeds are allowed to give different numbers, but not a different story
    assert {r.best.layer for r in results} == {1}
    assert all(r.best.val_score > 0.85 for r in results)
    # and the seed is actually used: the data order differs, so some score moves
    assert len({tuple(h.val_score for h in r.heads) for r in results}) > 1


def test_global_rng_does_not_affect_training() -> None:
    train, val, test = _three_splits({1: 1.0})
    torch.manual_seed(0)
    a = train_linear_probes(train, val, test, SOURCES, N_CLASSES, FAST, seed=4)
    torch.manual_seed(999)
    b = train_linear_probes(train, val, test, SOURCES, N_CLASSES, FAST, seed=4)
    assert a == b


def test_on_epoch_reports_every_epoch() -> None:
    train, val, test = _three_splits({1: 1.0}, n=60)
    seen: list[int] = []
    config = default_config("linear", "aim-v1", learning_rates=(1e-2,), epochs=4, batch_size=16)
    train_linear_probes(train, val, test, SOURCES, N_CLASSES, config, seed=0, on_epoch=seen.append)
    assert seen == [1, 2, 3, 4]


# --- concatenated heads, weight decay, schedule, metric ---------------------------------------


def test_concatenated_head_equals_a_head_on_the_concatenated_features() -> None:
    """patch_mean+cls is two weight blocks whose logits add: exactly a linear head on [pm; cls]."""
    sources = [src(0, PATCH_MEAN), src(0, CLS)]
    train, val, test = _three_splits({0: 0.7, 1: 0.7}, n_sources=2, seed=4)
    config = default_config("linear", "aim-v1", learning_rates=(3e-2,), weight_decays=(1e-2,), epochs=8, batch_size=64)
    together = train_linear_probes(train, val, test, sources, N_CLASSES, config, seed=2)
    concat_head = next(h for h in together.heads if h.token == CONCAT)

    def cat(split: PooledFeatures) -> PooledFeatures:
        return PooledFeatures(split.features.reshape(len(split.labels), 1, 2 * DIM), split.labels)

    alone = train_linear_probes(cat(train), cat(val), cat(test), [src(0)], N_CLASSES, config, seed=2)
    assert concat_head.val_score == pytest.approx(alone.heads[0].val_score, abs=1e-9)
    assert [h.token for h in together.heads] == [PATCH_MEAN, CLS, CONCAT]


def test_weight_decay_changes_the_heads() -> None:
    train, val, test = _three_splits({1: 0.8})
    config = default_config("linear", "aim-v1", learning_rates=(3e-1,), weight_decays=(0.0, 10.0), epochs=20, batch_size=64)
    result = train_linear_probes(train, val, test, SOURCES, N_CLASSES, config, seed=0)
    scores = {h.hparams["weight_decay"]: h.val_score for h in result.heads if h.layer_set == "1"}
    assert scores[0.0] > scores[10.0]  # a huge decay shrinks the informative head towards chance


def test_warmup_then_cosine_schedule() -> None:
    values = [warmup_cosine(step, warmup=4, total=12) for step in range(12)]
    assert values[:4] == [0.25, 0.5, 0.75, 1.0]
    assert values[4] == 1.0 and values[8] == pytest.approx(0.5) and values[11] < 0.05
    assert all(a >= b for a, b in zip(values[4:], values[5:]))


def test_the_task_metric_scores_every_head() -> None:
    train, val, test = _three_splits({1: 1.0})
    top1 = train_linear_probes(train, val, test, SOURCES, N_CLASSES, FAST, seed=0)
    balanced = train_linear_probes(train, val, test, SOURCES, N_CLASSES, FAST, seed=0, metric="mean_per_class")
    assert [h.hparams for h in top1.heads] == [h.hparams for h in balanced.heads]
    assert [h.val_score for h in top1.heads] != [h.val_score for h in balanced.heads]


def test_agrees_with_scikit_learn_logistic_regression() -> None:
    """On fixed features, a converged head predicts what scikit-learn's multinomial logistic
    regression (the reference linear probe, on the same standardised features) predicts."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    train, val, test = _three_splits({0: 0.9}, n=400, n_sources=1, seed=6)
    config = default_config(
        "linear", "aim-v1", learning_rates=(1e-1,), weight_decays=(0.0,), epochs=150, batch_size=400, warmup_fraction=0.0
    )
    ours = train_linear_probes(train, val, test, [src(0)], N_CLASSES, config, seed=0)

    scaler = StandardScaler().fit(train.features[:, 0].numpy())
    reference = LogisticRegression(C=1e4, max_iter=5000).fit(scaler.transform(train.features[:, 0].numpy()), train.labels.numpy())
    for split, score in ((val, ours.best.val_score), (test, ours.best.test_score)):
        expected = reference.score(scaler.transform(split.features[:, 0].numpy()), split.labels.numpy())
        assert score == pytest.approx(expected, abs=0.015)
    assert 0.6 < ours.best.test_score < 0.95  # a problem where the two could disagree


class _KilledAfterSaving(Checkpointing):
    """Saves like a real checkpoint, then interrupts the run after the n-th save (mid-epoch)."""

    def __init__(self, path: Path, n: int) -> None:
        super().__init__(path, "cell", every=1)
        object.__setattr__(self, "left", [n])

    def save(self, state: dict) -> None:
        super().save(state)
        self.left[0] -= 1
        if self.left[0] == 0:
            raise KeyboardInterrupt


def test_kill_and_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    train, val, test = _three_splits({1: 1.0}, n=100)
    config = default_config(
        "linear", "aim-v1", learning_rates=(1e-2, 1e-1), weight_decays=(0.0, 1e-2), epochs=3, batch_size=32
    )  # 4 steps per epoch
    whole = train_linear_probes(train, val, test, SOURCES, N_CLASSES, config, seed=3)
    state = tmp_path / "linear.pt"
    with pytest.raises(KeyboardInterrupt):
        train_linear_probes(train, val, test, SOURCES, N_CLASSES, config, seed=3, checkpoint=_KilledAfterSaving(state, 6))
    assert torch.load(state, weights_only=True)["epoch"] == 1 and torch.load(state, weights_only=True)["step"] == 2
    epochs: list[int] = []
    resumed = train_linear_probes(train, val, test, SOURCES, N_CLASSES, config, seed=3, on_epoch=epochs.append,
                                  checkpoint=Checkpointing(state, "cell"))  # fmt: skip
    assert epochs == [2, 3]  # only the rest ran
    assert resumed == whole


def test_online_linear_probe_trains_on_views_resumes_and_ignores_test_labels(micro_cls: Any, digits_48: Any, tmp_path: Path) -> None:
    backbone, splits = micro_cls, digits_48
    sets = parse_layer_sets("all", backbone.depth)
    blocks = blocks_needed(sets)
    cached = [
        probe_inputs(extract_pooled(backbone, s, blocks), feature_sources(backbone, blocks), sets)
        for s in (splits.train, splits.val, splits.test)
    ]
    (train, sources), (val, _), (test, _) = cached
    config = default_config(
        "linear", "aim-v1", learning_rates=(1e-2, 1e-1), weight_decays=(0.0,), epochs=2, batch_size=16, data_mode="online"
    )
    online = online_probe_inputs(backbone, splits.train, sets, "rrc_flip", 0.08, seed=0, batch_size=16)

    calls = count_forwards(backbone)
    whole = train_linear_probes(train, val, test, sources, 10, config, seed=0, online=online)
    assert sum(n for n, _ in calls) == 2 * len(splits.train)  # one forward per training image per epoch
    cached_result = train_linear_probes(train, val, test, sources, 10, replace(config, data_mode="cached", augmentation="none"), seed=0)
    assert [h.val_score for h in cached_result.heads] != [h.val_score for h in whole.heads]  # the views matter

    state = tmp_path / "online.pt"
    with pytest.raises(KeyboardInterrupt):
        train_linear_probes(train, val, test, sources, 10, config, seed=0, online=online, checkpoint=_KilledAfterSaving(state, 4))
    resumed = train_linear_probes(train, val, test, sources, 10, config, seed=0, online=online, checkpoint=Checkpointing(state, "cell"))
    assert resumed == whole
    shuffled = PooledFeatures(test.features, test.labels[torch.randperm(len(test.labels), generator=torch.Generator().manual_seed(0))])
    corrupted = train_linear_probes(train, val, shuffled, sources, 10, config, seed=0, online=online)
    assert corrupted.heads == whole.heads and _selection(corrupted) == _selection(whole)


# --- the recipe's clipping and decay exclusions; val and test in one precision ------------------


def _final_heads(config: Any, path: Path) -> list[torch.Tensor]:
    """The heads after training on the signal splits, as the last checkpoint (the last step's) holds them."""
    train, val, test = _three_splits({1: 1.5})
    train_linear_probes(train, val, test, SOURCES, N_CLASSES, config, seed=0, checkpoint=Checkpointing(path, "run", every=1))
    return [
        tensor for head in torch.load(path, weights_only=True)["heads"] for tensor in head[2:4]
    ]  # [column, point, weight, bias, moments]


def test_grad_clip_takes_effect(tmp_path: Path) -> None:
    free = _final_heads(FAST, tmp_path / "free.pt")
    clipped = _final_heads(replace(FAST, grad_clip=1e-12), tmp_path / "clipped.pt")
    largest = [max(float(t.abs().max()) for t in heads if t.numel()) for heads in (free, clipped)]
    assert largest[1] < 1e-3 * largest[0]  # gradients far below Adam's epsilon barely move the heads


def test_parameters_named_in_no_weight_decay_are_never_decayed() -> None:
    train, val, test = _three_splits({1: 0.8})
    config = default_config(
        "linear",
        "aim-v1",
        learning_rates=(3e-1,),
        weight_decays=(0.0, 10.0),
        epochs=20,
        batch_size=64,
        no_weight_decay=("weight", "bias"),
        grid_search="full",
    )
    result = train_linear_probes(train, val, test, SOURCES, N_CLASSES, config, seed=0)
    scores = {wd: [h.val_score for h in result.heads if h.hparams["weight_decay"] == wd] for wd in config.weight_decays}
    assert scores[0.0] == scores[10.0]  # nothing decays, so wd 10 trains exactly as wd 0 (see test_weight_decay_changes_the_heads)


def test_val_and_test_are_scored_in_the_same_precision() -> None:
    """The same images as val and as test give every selected head the same score: all heads
    predict val at once, the selected head alone predicts test, in the same arithmetic."""
    sources = [src(0, PATCH_MEAN), src(0, CLS), src(1, PATCH_MEAN), src(1, CLS)]
    train, val, _ = _three_splits({0: 0.4, 1: 0.4, 2: 0.4, 3: 0.4}, n_sources=4, seed=5)
    result = train_linear_probes(train, val, val, sources, N_CLASSES, FAST, seed=0)
    assert {r.token for r in result.layers} <= {PATCH_MEAN, CLS, CONCAT}
    assert [r.val_score for r in result.layers] == [r.test_score for r in result.layers]


# --- head precision -------------------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_head_precision_sets_the_training_products_and_every_score_stays_fp32(monkeypatch: pytest.MonkeyPatch, precision: str) -> None:
    products: list[torch.dtype] = []  # operand dtype of every training product
    scores: list[torch.dtype] = []  # dtype of every logits scored (rungs, val, test)
    bmm, logits, head_logits = torch.bmm, LinearHeads.logits, LinearHeads.head_logits

    def recording(a: torch.Tensor, b: torch.Tensor, **out: Any) -> torch.Tensor:
        products.extend([a.dtype, b.dtype])
        return bmm(a, b, **out)

    def scored(result: torch.Tensor) -> torch.Tensor:
        scores.append(result.dtype)
        return result

    monkeypatch.setattr(torch, "bmm", recording)
    monkeypatch.setattr(LinearHeads, "logits", lambda self, x: scored(logits(self, x)))
    monkeypatch.setattr(LinearHeads, "head_logits", lambda self, x, head: scored(head_logits(self, x, head)))
    train, val, test = _three_splits({1: 1.0})
    result = train_linear_probes(
        train, val, test, SOURCES, N_CLASSES, replace(FAST, head_precision=precision, grid_search="halving"), seed=0
    )
    assert set(products) == {torch.bfloat16 if precision == "bf16" else torch.float32}
    assert set(scores) == {torch.float32} and len(scores) > 1 + LAYERS  # rungs, val, and one test pass per layer set
    assert len(result.layers) == LAYERS


def test_bf16_heads_select_and_score_as_fp32_heads() -> None:
    """bf16 products change a head's weights in their last bits, not what it learns: on the same
    features every layer set selects the same grid point with the same score to within one image."""
    train, val, test = _three_splits({0: 0.5, 1: 1.0, 2: 0.3}, n=400)
    config = replace(FAST, learning_rates=(1e-3, 1e-2, 1e-1), weight_decays=(0.0, 1e-2))
    fp32 = train_linear_probes(train, val, test, SOURCES, N_CLASSES, replace(config, head_precision="fp32"), seed=0)
    bf16 = train_linear_probes(train, val, test, SOURCES, N_CLASSES, replace(config, head_precision="bf16"), seed=0)
    assert [h.hparams for h in bf16.heads] == [h.hparams for h in fp32.heads]
    assert max(abs(a.val_score - b.val_score) for a, b in zip(bf16.heads, fp32.heads)) <= 2 / 400
    for mine, theirs in zip(bf16.layers, fp32.layers):
        assert abs(mine.test_score - theirs.test_score) <= 1 / 400


# --- successive halving (aimbench.probes.linear.halving) ------------------------------------------------


def test_halving_survivors_end_exactly_as_in_the_full_grid_and_stopped_heads_say_where() -> None:
    train, val, test = _three_splits({1: 1.0, 2: 0.3})
    grid = default_config(
        "linear",
        "aim-v1",
        learning_rates=(1e-3, 1e-2, 1e-1, 3e-1),
        weight_decays=(0.0, 1e-1),
        epochs=16,
        batch_size=64,
        grid_search="halving",
    )
    full = train_linear_probes(train, val, test, SOURCES, N_CLASSES, dataclasses.replace(grid, grid_search="full"), seed=0)
    halved = train_linear_probes(train, val, test, SOURCES, N_CLASSES, grid, seed=0)
    assert [(h.layer_set, h.token, h.hparams) for h in halved.heads] == [(h.layer_set, h.token, h.hparams) for h in full.heads]
    finished = [(h, f) for h, f in zip(halved.heads, full.heads) if h.stopped_at is None]
    stopped = [h for h in halved.heads if h.stopped_at is not None]
    per_set = len(grid.learning_rates) * len(grid.weight_decays)
    assert len(finished) == LAYERS and len(stopped) == LAYERS * (per_set - 1)  # 8 -> 4 -> 2 -> 1 (-> 1) per layer set
    assert {h.stopped_at for h in stopped} == {1 / 16, 1 / 8, 1 / 4}
    assert all(h.val_score == pytest.approx(f.val_score, abs=1e-9) for h, f in finished)  # the same trajectories
    for mine, theirs in zip(halved.layers, full.layers):
        if mine.hparams == theirs.hparams:  # the full grid's winner survived: the very same head and numbers
            assert (mine.val_score, mine.test_score) == pytest.approx((theirs.val_score, theirs.test_score), abs=1e-9)


def test_halving_resumes_mid_run_with_the_heads_it_had_kept(tmp_path: Path) -> None:
    train, val, test = _three_splits({1: 1.0}, n=100)
    config = default_config(
        "linear", "aim-v1", learning_rates=(1e-2, 1e-1), weight_decays=(0.0, 1e-2), epochs=8, batch_size=32, grid_search="halving"
    )  # 4 steps/epoch
    whole = train_linear_probes(train, val, test, SOURCES, N_CLASSES, config, seed=3)
    state = tmp_path / "linear.pt"
    with pytest.raises(KeyboardInterrupt):  # killed after step 20 of 32: past the rungs at steps 2, 4, 8 and 16
        train_linear_probes(train, val, test, SOURCES, N_CLASSES, config, seed=3, checkpoint=_KilledAfterSaving(state, 20))
    active = torch.load(state, weights_only=True)["active"]  # column -> grid points still training
    assert sorted(active) == list(range(LAYERS)) and sum(map(len, active.values())) < LAYERS * 4
    resumed = train_linear_probes(train, val, test, SOURCES, N_CLASSES, config, seed=3, checkpoint=Checkpointing(state, "cell"))
    assert resumed == whole
