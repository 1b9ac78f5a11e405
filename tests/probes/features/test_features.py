"""Pooled features: one backbone forward per batch for every layer and token kind; layer-set inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_BACKBONE_CARD, count_forwards, write_card

from aimbench.adapters import load_backbone
from aimbench.cards.backbone_card import CLS, PATCH_MEAN
from aimbench.cards.registry import Registry
from aimbench.data.images import LabelledImages, TransformedImages
from aimbench.probes.features.extract import FeatureSource, ProbeSource, extract_pooled, feature_sources, probe_inputs
from aimbench.probes.features.layer_sets import LayerSet


@pytest.fixture
def registry(tiny_cards: Path) -> Registry:
    return Registry.load([tiny_cards])


def _images(n: int, size: int = 16, seed: int = 0) -> LabelledImages:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
    labels = rng.integers(0, 3, size=n)
    return LabelledImages.from_arrays(pixels, labels)


def test_feature_sources_order(registry: Registry) -> None:
    cls = load_backbone("micro-cls", registry=registry)
    assert feature_sources(cls, [0, 2]) == [
        FeatureSource(0, PATCH_MEAN),
        FeatureSource(0, CLS),
        FeatureSource(2, PATCH_MEAN),
        FeatureSource(2, CLS),
    ]
    patches = load_backbone("micro-patches", registry=registry)
    assert feature_sources(patches, [0, 1, 2]) == [FeatureSource(i, PATCH_MEAN) for i in range(3)]


@pytest.mark.parametrize(("name", "tokens"), [("micro-cls", (PATCH_MEAN, CLS)), ("micro-patches", (PATCH_MEAN,))])
def test_one_forward_per_batch_for_all_layers(registry: Registry, name: str, tokens: tuple[str, ...]) -> None:
    backbone = load_backbone(name, registry=registry)
    images = _images(10)
    layers = [0, 2]
    calls = count_forwards(backbone)
    seen: list[int] = []

    pooled = extract_pooled(backbone, images, layers, batch_size=4, on_batch=seen.append)

    assert [c[1] for c in calls] == [layers, layers, layers]  # ceil(10 / 4) batches, each with every layer at once
    assert seen == [4, 4, 2]
    n_sources = len(layers) * len(tokens)
    assert len(feature_sources(backbone, layers)) == n_sources
    assert pooled.features.shape == (10, n_sources, backbone.dim)
    assert pooled.features.dtype == torch.float32
    assert pooled.labels.dtype == torch.int64
    assert torch.equal(pooled.labels, torch.as_tensor(images.labels))


@pytest.mark.parametrize("name", ["micro-cls", "micro-patches"])
def test_pooled_values_match_forward_layers(registry: Registry, name: str) -> None:
    backbone = load_backbone(name, registry=registry)
    images = _images(7, seed=3)
    layers = [0, 1, 2]
    pooled = extract_pooled(backbone, images, layers, batch_size=3)
    sources = feature_sources(backbone, layers)

    dataset = TransformedImages(images, backbone.transform())
    batch = torch.stack([dataset[i][0] for i in range(len(images))])
    with torch.no_grad():
        by_layer = backbone.forward_layers(batch, layers)

    for s, source in enumerate(sources):
        out = by_layer[source.layer]
        if source.token == PATCH_MEAN:
            expected = out.patches.mean(dim=1)
        else:
            expected = out.prefix[:, 0]
        assert torch.allclose(pooled.features[:, s], expected, atol=1e-5), source
    # layers really differ, so a mix-up of the source order would be caught
    assert not torch.allclose(pooled.features[:, 0], pooled.features[:, -1], atol=1e-3)


def test_batch_size_does_not_change_features(registry: Registry) -> None:
    backbone = load_backbone("micro-cls", registry=registry)
    images = _images(6, seed=5)
    a = extract_pooled(backbone, images, [1, 2], batch_size=6)
    b = extract_pooled(backbone, images, [1, 2], batch_size=1)
    assert torch.allclose(a.features, b.features, atol=1e-5)


def test_subset_extracts_only_its_images(registry: Registry) -> None:
    backbone = load_backbone("micro-patches", registry=registry)
    images = _images(8, seed=2)
    full = extract_pooled(backbone, images, [2], batch_size=8)
    part = extract_pooled(backbone, images.subset(np.array([6, 1, 3])), [2], batch_size=2)
    assert torch.allclose(part.features, full.features[[6, 1, 3]], atol=1e-5)
    assert torch.equal(part.labels, full.labels[[6, 1, 3]])


def test_no_images_give_an_empty_tensor_of_the_right_width(registry: Registry) -> None:
    backbone = load_backbone("micro-cls", registry=registry)
    empty = LabelledImages.from_arrays(np.zeros((0, 16, 16), dtype=np.uint8), np.zeros(0, dtype=np.int64))
    pooled = extract_pooled(backbone, empty, [0, 2])
    assert pooled.labels.shape == (0,)
    assert pooled.features.shape == (0, len(feature_sources(backbone, [0, 2])), backbone.dim)


def test_no_images_without_cls_token(registry: Registry) -> None:
    backbone = load_backbone("micro-patches", registry=registry)
    empty = LabelledImages.from_arrays(np.zeros((0, 16, 16), dtype=np.uint8), np.zeros(0, dtype=np.int64))
    calls = count_forwards(backbone)
    pooled = extract_pooled(backbone, empty, [0, 2])
    assert calls == []
    assert pooled.features.shape == (0, 2, backbone.dim)


def test_card_probe_tokens_restrict_the_pooled_features(tmp_path: Path) -> None:
    text = TINY_BACKBONE_CARD.replace("cls_token = true", 'cls_token = true\nprobe_tokens = ["patch_mean"]', 1)
    write_card(tmp_path, "backbones", "testfam", text)
    backbone = load_backbone("micro-cls", registry=Registry.load([tmp_path]))
    assert feature_sources(backbone, [0, 2]) == [FeatureSource(0, PATCH_MEAN), FeatureSource(2, PATCH_MEAN)]
    images = LabelledImages.from_arrays(np.zeros((3, 16, 16), dtype=np.uint8), np.zeros(3))
    assert extract_pooled(backbone, images, [0, 2]).features.shape == (3, 2, 32)


def test_probe_inputs_average_window_blocks(registry: Registry) -> None:
    backbone = load_backbone("micro-cls", registry=registry)
    images = _images(5)
    blocks = [0, 1, 2]
    pooled = extract_pooled(backbone, images, blocks)
    sets = [LayerSet("2", (2,)), LayerSet("avg:0-2", (0, 1, 2))]
    inputs, sources = probe_inputs(pooled, feature_sources(backbone, blocks), sets)
    assert sources == [
        ProbeSource(sets[0], PATCH_MEAN),
        ProbeSource(sets[0], CLS),
        ProbeSource(sets[1], PATCH_MEAN),
        ProbeSource(sets[1], CLS),
    ]
    # a window's input is the pooling of the mean of its raw block outputs
    batch = torch.stack([backbone.transform()(images.image(i)) for i in range(5)])
    with torch.no_grad():
        out = backbone.forward_layers(batch, blocks)
    mean_tokens = torch.stack([o.patches for o in out.values()]).mean(0)
    mean_cls = torch.stack([o.prefix[:, 0] for o in out.values()]).mean(0)
    torch.testing.assert_close(inputs.features[:, 2], mean_tokens.mean(1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(inputs.features[:, 3], mean_cls, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(inputs.features[:, 0], out[2].patches.mean(1), atol=1e-5, rtol=1e-5)
    assert torch.equal(inputs.labels, pooled.labels)
