"""Training views for online probes: augmented, and reproducible by construction.

The augmentation of an image depends only on (seed, epoch, position), never on which worker
loads it or on what ran before, so a resumed run and an uninterrupted one see the same views:
torch's, Python's and NumPy's generators (timm's RandAugment draws from the latter two) are all
seeded from those three numbers for the one image and restored after it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode, v2

from aimbench.adapters.base import Backbone, build_eval_transform
from aimbench.cards.backbone_card import Preprocess
from aimbench.cards.protocol_card import rand_augment_policy
from aimbench.data.images import LabelledImages
from aimbench.probes.features.extract import PooledFeatures, feature_sources, pool_batch, probe_inputs
from aimbench.probes.features.layer_sets import LayerSet, blocks_needed
from aimbench.probes.features.rank_batches import in_chunks, rank_loader
from aimbench.probes.features.view_recipe import ViewRecipe
from aimbench.probes.ownership import Shard
from aimbench.probes.schedule import epoch_batches
from aimbench.probes.sharding import to_owners

TORCHVISION_OPTIONS = {"m": "magnitude", "n": "num_ops"}  # a torchvision policy's options, as v2.RandAugment's arguments


def _rand_augment(policy: str, pre: Preprocess, interpolation: InterpolationMode) -> list[Callable]:
    """The strong views' RandAugment on a uint8 image tensor. torchvision's runs on the tensor, which
    it resamples with nearest or bilinear only (a bicubic crop's RandAugment resamples bilinearly).
    timm's runs on a PIL image, with the hyper-parameters timm's ``transforms_imagenet_train`` gives
    it (translation 45 % of the crop, fill with the mean colour, the crop's resampling)."""
    library, options = rand_augment_policy(policy)
    if library == "torchvision":
        on_tensors = InterpolationMode.BILINEAR if interpolation is InterpolationMode.BICUBIC else interpolation
        return [v2.RandAugment(**{TORCHVISION_OPTIONS[k]: int(v) for k, v in options.items()}, interpolation=on_tensors)]
    from timm.data.auto_augment import posterize, rand_augment_transform
    from timm.data.transforms import str_to_pil_interp

    hparams = {
        "translate_const": int(pre.image_size * 0.45),
        "img_mean": tuple(min(255, round(255 * x)) for x in pre.mean),
        "interpolation": str_to_pil_interp(interpolation.value),
    }
    augment = rand_augment_transform(policy.partition(":")[2], hparams)
    for op in augment.ops:
        if op.aug_fn is posterize:
            op.aug_fn = _posterize_keeping_no_bit
    return [v2.ToPILImage(), augment, v2.PILToTensor()]


def _posterize_keeping_no_bit(image: Image.Image, bits_to_keep: int, **kwargs: Any) -> Image.Image:
    """timm's posterize, where keeping 0 bits gives a black image as Pillow did before 13, which
    raises instead: timm's increasing-severity posterize keeps 0 bits at magnitude 10, which a
    policy with magnitude noise (rand-m9-mstd0.5-inc1) reaches."""
    from timm.data.auto_augment import posterize

    return image.point(lambda _: 0) if bits_to_keep <= 0 else posterize(image, bits_to_keep, **kwargs)


def train_transform(pre: Preprocess, augmentation: str, min_scale: float, recipe: ViewRecipe = ViewRecipe()) -> v2.Compose:
    """The training view at the eval size with the eval normalisation: ``rrc_flip`` is
    RandomResizedCrop + horizontal flip (+ colour jitter when the recipe has one); ``strong`` adds
    RandAugment and random erasing (the default recipe: torchvision's RandAugment, 2 ops at
    magnitude 9, and erasing at 0.25, the DeiT/MAE fine-tuning recipe); ``none`` is the eval crop.

    Colour jitter and RandAugment are never combined: like timm's ``transforms_imagenet_train``,
    which drops the colour jitter it is given whenever an auto-augment policy is given too (unless
    forced), a strong view runs RandAugment and no colour jitter."""
    if augmentation == "none":
        return build_eval_transform(pre)
    interpolation = InterpolationMode(pre.interpolation if recipe.interpolation == "backbone" else recipe.interpolation)
    crop = [
        v2.RandomResizedCrop(pre.image_size, scale=(min_scale, 1.0), ratio=recipe.crop_ratio, interpolation=interpolation, antialias=True),
        v2.RandomHorizontalFlip(p=recipe.flip_prob),
    ]
    strong = augmentation == "strong"
    if strong:
        augment = _rand_augment(recipe.rand_augment, pre, interpolation)
    else:
        jitter = recipe.color_jitter
        augment = [v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter)] if jitter is not None else []
    return v2.Compose(
        [
            v2.Lambda(lambda image: image.convert("RGB")),
            v2.PILToTensor(),
            *crop,
            *augment,
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(pre.mean), std=list(pre.std)),
            *([v2.RandomErasing(p=recipe.random_erasing)] if strong and recipe.random_erasing > 0 else []),
        ]
    )


@contextmanager
def _seeded_python_and_numpy(seed: int) -> Iterator[None]:
    """Python's and NumPy's global generators seeded for a block, then put back as they were."""
    python, numpy = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        random.setstate(python)
        np.random.set_state(numpy)


class AugmentedViews(Dataset):
    """Training images whose augmentation is seeded by (seed, epoch, position): reproducible with
    any number of DataLoader workers and after a resume."""

    def __init__(self, images: LabelledImages, transform: Callable, seed: int) -> None:
        self.images, self.transform, self.seed, self.epoch = images, transform, seed, 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int]:
        seed = (self.seed * 1_000_003 + self.epoch) * 10_000_019 + position
        with torch.random.fork_rng(devices=[]), _seeded_python_and_numpy(seed):
            torch.manual_seed(seed)
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
    shard: Shard = Shard(),
) -> Callable[[int, int], Iterator[tuple[torch.Tensor, torch.Tensor]]]:
    """Training batches of pooled layer-set inputs (B, sources, D) from augmented views:
    ``batches(epoch, first_step)`` yields (inputs, labels) in the epoch's seeded order, so online
    linear probes resume exactly like cached ones. Each rank forwards its rows of a batch in chunks
    of ``shard.chunk`` images and receives its own layer sets' inputs for the whole batch
    (``sharding.to_owners``); alone, that is every input."""
    blocks = blocks_needed(sets)
    sources = feature_sources(backbone, blocks)
    views = AugmentedViews(train, train_transform(backbone.preprocess, augmentation, min_scale), seed)
    per_set = len(backbone.spec.probe_tokens)

    def pooled(images: torch.Tensor) -> torch.Tensor:
        return probe_inputs(PooledFeatures(pool_batch(backbone, images, blocks, block_norm), torch.empty(0)), sources, sets)[0].features

    def empty() -> torch.Tensor:  # a rank with no rows of a batch still takes part in its exchange
        return torch.empty(0, len(sets) * per_set, backbone.dim, device=backbone.device)

    def batches(epoch: int, first_step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        views.epoch = epoch
        order = epoch_batches(len(train), batch_size, seed, epoch)[first_step:]
        for batch, images in rank_loader(views, order, shard, workers):
            inputs = in_chunks(pooled, images, shard.chunk, empty)
            yield to_owners(inputs, shard, len(batch), set_dim=1, row_dim=0, per_set=per_set), torch.as_tensor(train.labels[batch])

    return batches
