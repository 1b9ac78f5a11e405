"""How a training view is drawn, beyond its level (``rrc_flip``, ``strong``, ``none``): the crop's
aspect ratios and resampling, the flip, which RandAugment the strong views run, colour jitter and
random erasing. Kept free of torch, so a probe config can hold one without importing torch.

The defaults are the views aimbench has always drawn (torchvision's RandomResizedCrop ratios, the
backbone's own resampling, RandAugment of 2 ops at magnitude 9 and random erasing at 0.25 in the
strong views, no colour jitter): :func:`aimbench.probes.features.views.train_transform` without a
recipe draws exactly those, and the attentive config leaves a field at its default out of a cell's
identity, so records made before these fields existed keep their hashes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ViewRecipe:
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # RandomResizedCrop's aspect ratio range (torchvision's default)
    interpolation: str = "backbone"  # the crop's resampling: the backbone card's, or bicubic | bilinear | nearest
    flip_prob: float = 0.5  # horizontal flip
    rand_augment: str = "torchvision:rand-m9-n2"  # "<library>:<policy>" (protocol_card.rand_augment_policy); strong views only
    color_jitter: float | None = None  # brightness, contrast and saturation strength; only in views without RandAugment, as timm
    random_erasing: float = 0.25  # probability, strong views only
