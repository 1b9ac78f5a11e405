"""Pooled per-layer features from ONE backbone forward per image, and probe inputs built from them.

Every needed block and token kind is read from the same forward pass (``forward_layers`` with
all blocks at once), so a layer-wise sweep costs one extraction, not one per layer. Layer-set
inputs are then derived without touching the backbone: a window's feature is the mean of its
blocks' pooled features, which equals pooling the mean of the raw block outputs because both
poolings (patch mean, cls token) are linear.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from aimbench.adapters.base import Backbone
from aimbench.cards.backbone_card import CLS, CONCAT, PATCH_MEAN, column_kinds
from aimbench.data.images import LabelledImages, TransformedImages
from aimbench.errors import one_line_worker_errors
from aimbench.probes.features.layer_sets import LayerSet


@dataclass(frozen=True)
class FeatureSource:
    """One probe input: a block index and how its tokens were pooled."""

    layer: int
    token: str


@dataclass(frozen=True)
class PooledFeatures:
    features: torch.Tensor  # (N, S, D) float32, S = len(sources)
    labels: torch.Tensor  # (N,) int64


@dataclass(frozen=True)
class ProbeSource:
    """One probe input: a layer set and a token pooling (``patch_mean`` or ``cls``)."""

    layer_set: LayerSet
    token: str


def feature_sources(backbone: Backbone, layers: Sequence[int]) -> list[FeatureSource]:
    """Every layer pooled every way the card asks (default: patch mean, plus cls where present)."""
    return [FeatureSource(layer, token) for layer in layers for token in backbone.spec.probe_tokens]


def read_block_norm(backbone: Backbone, block_norm: str) -> str:
    """``block_norm`` as ``backbone`` can apply it: "final" on a network with no norm after its last
    block (:meth:`Backbone.final_norm` None) reads the raw blocks, and shares raw features' cache."""
    return "raw" if block_norm == "final" and backbone.final_norm() is None else block_norm


def pool_batch(backbone: Backbone, images: torch.Tensor, layers: Sequence[int], block_norm: str = "raw") -> torch.Tensor:
    """One forward: (B, len(layers) x poolings, D) float32, in the order of :func:`feature_sources`;
    ``block_norm = "final"``: every token through the backbone's final norm before pooling (DINOv2)."""
    pooled = []
    norm = backbone.final_norm() if block_norm == "final" else None  # None: raw (or a network without one)
    with torch.inference_mode():
        for out in backbone.forward_layers(images, layers).values():
            patches, prefix = (
                (out.patches, out.prefix) if norm is None else (norm(out.patches), None if out.prefix is None else norm(out.prefix))
            )
            for token in backbone.spec.probe_tokens:
                if token == PATCH_MEAN:
                    pooled.append(patches.mean(dim=1))
                elif prefix is None:  # the card allows cls only where the family has one
                    raise RuntimeError(f"backbone '{backbone.spec.name}' returned no prefix tokens to pool '{token}' from")
                else:
                    pooled.append(prefix[:, 0])
        stacked = torch.stack(pooled, dim=1).float()
    return stacked.clone()  # a normal tensor, usable outside inference mode


def eval_batches(backbone: Backbone, images: LabelledImages, batch_size: int, workers: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``images`` through the backbone's eval transform, in order, in batches: what every eval-crop
    pass reads (an image that cannot be decoded is one line, from a worker process too)."""
    loader: DataLoader[tuple[torch.Tensor, torch.Tensor]] = DataLoader(
        TransformedImages(images, backbone.transform()),  # type: ignore[arg-type]  # not a Dataset subclass (torch-free)
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
    )
    return one_line_worker_errors(loader)


def extract_pooled(
    backbone: Backbone,
    images: LabelledImages,
    layers: Sequence[int],
    batch_size: int = 64,
    workers: int = 0,
    on_batch: Callable[[int], None] | None = None,
    block_norm: str = "raw",
) -> PooledFeatures:
    """Pool the tokens of ``layers`` for every image, in the order of :func:`feature_sources`."""
    loader = eval_batches(backbone, images, batch_size, workers)
    chunks: list[torch.Tensor] = []
    for batch, _ in loader:
        chunks.append(pool_batch(backbone, batch, layers, block_norm).cpu())
        if on_batch is not None:
            on_batch(len(batch))
    width = len(feature_sources(backbone, layers))
    features = torch.cat(chunks) if chunks else torch.empty(0, width, backbone.dim)
    return PooledFeatures(features, torch.as_tensor(images.labels, dtype=torch.int64))


def extract_tokens(
    backbone: Backbone,
    images: LabelledImages,
    blocks: Sequence[int],
    batch_size: int = 64,
    workers: int = 0,
    on_batch: Callable[[int], None] | None = None,
) -> dict[int, torch.Tensor]:
    """Patch tokens (N, tokens, D) of every block in ``blocks``, one forward per batch."""
    loader = eval_batches(backbone, images, batch_size, workers)
    chunks: dict[int, list[torch.Tensor]] = {block: [] for block in blocks}
    with torch.inference_mode():
        for batch, _ in loader:
            for block, out in backbone.forward_layers(batch, blocks).items():
                chunks[block].append(out.patches.float().cpu())
            if on_batch is not None:
                on_batch(len(batch))
    return {block: torch.cat(parts) if parts else torch.empty(0, backbone.patch_tokens(), backbone.dim) for block, parts in chunks.items()}


def probe_inputs(
    pooled: PooledFeatures, sources: Sequence[FeatureSource], sets: Sequence[LayerSet]
) -> tuple[PooledFeatures, list[ProbeSource]]:
    """Per-block pooled features (laid out as ``sources``) to one input per (layer set, token)."""
    index = {(src.layer, src.token): i for i, src in enumerate(sources)}
    tokens = list(dict.fromkeys(src.token for src in sources))
    inputs, columns = [], []
    for layer_set in sets:
        for token in tokens:
            picks = [index[(block, token)] for block in layer_set.blocks]
            columns.append(pooled.features[:, picks].float().mean(dim=1))
            inputs.append(ProbeSource(layer_set, token))
    n, d = pooled.features.shape[0], pooled.features.shape[-1]
    features = torch.stack(columns, dim=1) if columns else torch.empty(n, 0, d)
    return PooledFeatures(features, pooled.labels), inputs


def head_inputs(sources: Sequence[ProbeSource], kinds: Sequence[str] | None = None) -> list[tuple[LayerSet, str, tuple[int, ...]]]:
    """The heads a probe trains per grid point, in grid order: (layer set, token kind, indices of
    the sources it reads): each pooling alone, then both concatenated where a set has both, narrowed
    to ``kinds`` (a protocol's ``token_kinds``) as :func:`~aimbench.cards.backbone_card.column_kinds` says."""
    heads: list[tuple[LayerSet, str, tuple[int, ...]]] = []
    for layer_set in dict.fromkeys(src.layer_set for src in sources):
        index = {src.token: i for i, src in enumerate(sources) if src.layer_set == layer_set}
        for kind in column_kinds(list(index), kinds):
            heads.append((layer_set, kind, (index[PATCH_MEAN], index[CLS]) if kind == CONCAT else (index[kind],)))
    return heads
