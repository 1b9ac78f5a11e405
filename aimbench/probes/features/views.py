"""Training views for online probes: augmented, and reproducible by construction.

The augmentation of an image depends only on (seed, epoch, position), never on which worker
loads it or on what ran before, so a resumed run and an uninterrupted one see the same views.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import InterpolationMode, v2

from aimbench.adapters.base import Backbone, build_eval_transform
from aimbench.cards.backbone_card import Preprocess
from aimbench.data.images import LabelledImages
from aimbench.probes.features.extract import PooledFeatures, feature_sources, pool_batch, probe_inputs
from aimbench.probes.features.layer_sets import LayerSet, blocks_needed
from aimbench.probes.schedule import epoch_batches


def train_transform(pre: Preprocess, augmentation: str, min_scale: float) -> v2.Compose:
    """The training view at the eval size with the eval normalisation: ``rrc_flip`` is
    RandomResizedCrop + horizontal flip; ``strong`` adds RandAugment (2 ops, magnitude 9) and
    random erasing (p 0.25), the DeiT/MAE fine-tuning recipe; ``none`` is the eval crop.
    RandAugment's geometric ops run on tensors, which torchvision supports with nearest and
    bilinear resampling only: a bicubic backbone's RandAugment resamples bilinearly."""
    if augmentation == "none":
        return build_eval_transform(pre)
    interpolation = InterpolationMode(pre.interpolation)
    on_tensors = InterpolationMode.BILINEAR if interpolation is InterpolationMode.BICUBIC else interpolation
    crop = [
        v2.RandomResizedCrop(pre.image_size, scale=(min_scale, 1.0), interpolation=interpolation, antialias=True),
        v2.RandomHorizontalFlip(),
    ]
    strong = augmentation == "strong"
    return v2.Compose(
        [
            v2.Lambda(lambda image: image.convert("RGB")),
            v2.PILToTensor(),
            *crop,
            *([v2.RandAugment(num_ops=2, magnitude=9, interpolation=on_tensors)] if strong else []),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(pre.mean), std=list(pre.std)),
            *([v2.RandomErasing(p=0.25)] if strong else []),
        ]
    )


class AugmentedViews(Dataset):
    """Training images whose augmentation is seeded by (seed, epoch, position): reproducible with
    any number of DataLoader workers and after a resume."""

    def __init__(self, images: LabelledImages, transform: Callable, seed: int) -> None:
        self.images, self.transform, self.seed, self.epoch = images, transform, seed, 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * 1_000_003 + self.epoch) * 10_000_019 + position)
            view = self.transform(self.images.image(position))
        return view, int(self.images.labels[position])


def online_probe_inputs(
    backbone: Backbone,
    train: LabelledImages,
    sets: Sequence[LayerSet],
    augmentation: str,
    min_scale: float,
    seed: int,
    batch_size: int,
    workers: int = 0,
    block_norm: str = "raw",
) -> Callable[[int, int], Iterator[tuple[torch.Tensor, torch.Tensor]]]:
    """Training batches of pooled layer-set inputs (B, sources, D) from augmented views, one
    backbone forward per batch: ``batches(epoch, first_step)`` yields (inputs, labels) in the
    epoch's seeded order, so online linear probes resume exactly like cached ones."""
    blocks = blocks_needed(sets)
    sources = feature_sources(backbone, blocks)
    views = AugmentedViews(train, train_transform(backbone.preprocess, augmentation, min_scale), seed)

    def batches(epoch: int, first_step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        views.epoch = epoch
        order = epoch_batches(len(train), batch_size, seed, epoch)[first_step:]
        for images, labels in DataLoader(views, batch_sampler=order, num_workers=workers):
            pooled = PooledFeatures(pool_batch(backbone, images, blocks, block_norm), labels)
            yield probe_inputs(pooled, sources, sets)[0].features, labels

    return batches
