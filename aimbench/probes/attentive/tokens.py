"""The attentive heads' inputs: each layer set's patch tokens, from the backbone or the feature cache.

A layer set's tokens are its block's patch tokens, or for a window the mean of its blocks' raw
outputs. Memory is what these functions are built around: the AIM-7B forward of 64 images holds
8.6 GB of block outputs in fp32, as much again as every layer set's tokens. So the sets' tokens
reuse the block outputs where they can (a set of one block takes the block's tensor itself), a
block's output is let go once every set reading it is made, windows add their blocks up one at a
time, and on several ranks the owners receive a batch one window of rows at a time
(``sharding.to_owners``), never the whole batch of their sets at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from aimbench.adapters.base import Backbone
from aimbench.data.images import LabelledImages, TransformedImages
from aimbench.probes.features.extract import eval_batches
from aimbench.probes.features.layer_sets import LayerSet, blocks_needed
from aimbench.probes.features.rank_batches import consecutive, rank_loader
from aimbench.probes.ownership import Shard
from aimbench.probes.sharding import to_owners

SetTokens = torch.Tensor | list[torch.Tensor]  # (L, B, N, D) float32, or L tensors (B, N, D): a layer set's tokens each


def window_means(
    by_block: dict[int, torch.Tensor], sets: Sequence[LayerSet], out: Sequence[torch.Tensor] | None = None
) -> list[torch.Tensor]:
    """Each layer set's mean of its blocks' tokens (B, N, D) float32, written into ``out`` (one
    tensor a set) when given. Windows are made first, each as a running sum of its blocks, then
    sets of one block, where the last set to read a block (float32, contiguous) takes it as it is,
    with no copy; ``by_block`` is emptied as the blocks are used up."""
    last_reader: dict[int, int] = {}
    order = sorted(range(len(sets)), key=lambda index: len(sets[index].blocks) == 1)  # windows, then single blocks
    for index in order:
        for block in sets[index].blocks:
            last_reader[block] = index
    made: dict[int, torch.Tensor] = {}
    for index in order:
        blocks = sets[index].blocks
        first = by_block[blocks[0]]
        if out is not None:
            made[index] = out[index].copy_(first)
        elif len(blocks) == 1 and last_reader[blocks[0]] == index and first.dtype == torch.float32 and first.is_contiguous():
            made[index] = first
        else:
            made[index] = first.to(torch.float32, copy=True, memory_format=torch.contiguous_format)
        for block in blocks[1:]:
            made[index].add_(by_block[block])
        if len(blocks) > 1:
            made[index].div_(len(blocks))
        for block in blocks:
            if last_reader[block] == index:
                del by_block[block]
    return [made[index] for index in range(len(sets))]


def _forward(
    backbone: Backbone, images: torch.Tensor, sets: Sequence[LayerSet], out: Sequence[torch.Tensor] | None = None
) -> list[torch.Tensor]:
    """One backbone forward's tokens of every set. Under ``no_grad``, not inference mode: the sets'
    tokens may be the block outputs themselves, and the heads' autograd and in-place normalisation
    need normal tensors."""
    with torch.no_grad():
        by_block = {b: o.patches for b, o in backbone.forward_layers(images, blocks_needed(sets)).items()}
        return window_means(by_block, sets, out)


def set_tokens(backbone: Backbone, images: torch.Tensor, sets: Sequence[LayerSet]) -> torch.Tensor:
    """Patch tokens of every layer set, (L, B, N, D) float32, from ONE backbone forward."""
    return torch.stack(_forward(backbone, images, sets))


def forwarded_tokens(backbone: Backbone, images: torch.Tensor | None, sets: Sequence[LayerSet], chunk: int) -> list[torch.Tensor]:
    """Every set's tokens (R, N, D) of this rank's ``images`` (None: it has no rows), forwarded
    ``chunk`` images at a time: one chunk's are the forward's own tensors; more are written into
    one tensor a set, so beside them only one chunk's block outputs exist at a time."""
    if images is None or not len(images):
        return [torch.empty(0, backbone.patch_tokens(), backbone.dim, device=backbone.device) for _ in sets]
    first = _forward(backbone, images[:chunk], sets)
    if len(images) <= chunk:
        return first
    out = [torch.empty(len(images), *tokens.shape[1:], device=backbone.device) for tokens in first]
    for whole, part in zip(out, first):
        whole[: len(part)] = part
    del first, part
    for start in range(chunk, len(images), chunk):
        _forward(backbone, images[start : start + chunk], sets, [whole[start : start + chunk] for whole in out])
    return out


class CachedTokens:
    """A split's patch-token maps from the feature cache (eval crop): layer-set tokens for any
    examples without running the backbone, for attentive probes in cached mode."""

    def __init__(self, blocks: dict[int, torch.Tensor]) -> None:
        self.blocks = blocks

    def set_tokens(self, positions: Sequence[int], sets: Sequence[LayerSet], device: torch.device) -> torch.Tensor:
        index = torch.as_tensor(list(positions), dtype=torch.long)
        return torch.stack(window_means({block: self.blocks[block][index] for block in blocks_needed(sets)}, sets)).to(device)


def eval_tokens(
    backbone: Backbone,
    images: LabelledImages,
    sets: Sequence[LayerSet],
    batch_size: int,
    workers: int,
    cached: CachedTokens | None = None,
    shard: Shard = Shard(),
) -> Iterator[torch.Tensor]:
    """Eval-crop tokens (L, B, N, D) of this rank's layer sets of ``sets`` (alone: all of them) for
    ``images`` in order, ``batch_size`` images at a time: from the cache when given, else one
    backbone forward per batch. With several ranks, each forwards one batch of every ``world``
    consecutive ones, and the owners receive them one batch at a time: the batches a rank alone
    gives its heads."""
    if cached is not None:
        for start in range(0, len(images), batch_size):
            yield cached.set_tokens(range(start, min(start + batch_size, len(images))), shard.owned(sets), backbone.device)
        return
    if shard.alone:
        for batch, _ in eval_batches(backbone, images, batch_size, workers):
            yield set_tokens(backbone, batch, sets)
        return
    dataset: Any = TransformedImages(images, backbone.transform())  # a map-style dataset, not a Dataset subclass (torch-free)
    for positions, loaded in rank_loader(dataset, consecutive(len(images), batch_size * shard.world), shard, workers):
        local = forwarded_tokens(backbone, loaded, sets, shard.chunk)
        for start in range(0, len(positions), batch_size):
            yield to_owners(local, shard, len(positions), window=range(start, min(start + batch_size, len(positions))))
        del local  # before the next group is forwarded
