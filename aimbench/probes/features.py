"""Pooled per-layer features from ONE backbone forward per image.

Every selected layer and token kind is read from the same forward pass (``forward_layers`` with
all layers at once), so a layer-wise sweep costs one extraction, not one per layer. The pooled
features are kept in memory and reused by every head and every epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from aimbench.adapters.base import Backbone
from aimbench.cards.backbone_card import PATCH_MEAN
from aimbench.data.images import LabelledImages, TransformedImages


@dataclass(frozen=True)
class FeatureSource:
    """One probe input: a block index and how its tokens were pooled."""

    layer: int
    token: str


@dataclass(frozen=True)
class PooledFeatures:
    features: torch.Tensor  # (N, S, D) float32, S = len(sources)
    labels: torch.Tensor  # (N,) int64


def feature_sources(backbone: Backbone, layers: Sequence[int]) -> list[FeatureSource]:
    """Every layer pooled every way the card asks (default: patch mean, plus cls where present)."""
    return [FeatureSource(layer, token) for layer in layers for token in backbone.spec.probe_tokens]


def extract_pooled(
    backbone: Backbone,
    images: LabelledImages,
    layers: Sequence[int],
    batch_size: int = 64,
    workers: int = 0,
    on_batch: Callable[[int], None] | None = None,
) -> PooledFeatures:
    """Pool the tokens of ``layers`` for every image, in the order of :func:`feature_sources`."""
    loader = DataLoader(
        TransformedImages(images, backbone.transform()),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
    )
    chunks = []
    with torch.inference_mode():
        for batch, _ in loader:
            pooled = []
            for out in backbone.forward_layers(batch, layers):
                for token in backbone.spec.probe_tokens:
                    pooled.append(out.patches.mean(dim=1) if token == PATCH_MEAN else out.prefix[:, 0])
            chunks.append(torch.stack(pooled, dim=1).float().cpu())
            if on_batch is not None:
                on_batch(len(batch))
    width = len(feature_sources(backbone, layers))
    features = torch.cat(chunks) if chunks else torch.empty(0, width, backbone.dim)
    return PooledFeatures(features, torch.as_tensor(images.labels, dtype=torch.int64))
