"""AIM v1's training augmentation, every random choice drawn from a generator given with the image.

The pipeline is l3m's AIM v1 ``train_transform``: ``RandomResizedCrop(size, scale=(0.4, 1),
bicubic)``, ``RandomHorizontalFlip()``, ``RandomApply([ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8)``,
``ToTensor``, ``Normalize``. torchvision's transforms draw from the global torch RNG, which would
make an image's view depend on what ran before it in its loader worker; here each choice is drawn
the way torchvision draws it (the crop's area and log-ratio, the flip coin, the apply-or-not coin,
the order of the four jitter operations and their four factors) but from the generator seeded by
the image's slot, and the same ``torchvision.transforms.functional`` operations apply them. A view
is therefore a pure function of (image, slot), and :func:`draw_params` / :meth:`TrainTransform.apply`
let tests replay the exact parameters recorded from the official pipeline.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

CROP_SCALE = (0.4, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
COLOR_JITTER_P = 0.8
# ColorJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1) as torchvision turns it into factor ranges
BRIGHTNESS, CONTRAST, SATURATION, HUE = (0.6, 1.4), (0.6, 1.4), (0.8, 1.2), (-0.1, 0.1)
JITTER_OPS: tuple[Callable[[Image.Image, float], Image.Image], ...] = (
    TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue,
)  # fmt: skip


@dataclass(frozen=True)
class Jitter:
    """One colour jitter: the order of the four operations (indices into ``JITTER_OPS``) and their factors."""

    order: tuple[int, ...]
    brightness: float
    contrast: float
    saturation: float
    hue: float


@dataclass(frozen=True)
class AugmentParams:
    crop: tuple[int, int, int, int]  # top, left, height, width (torchvision's get_params order)
    flip: bool
    jitter: Jitter | None  # None: the RandomApply coin said no


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * torch.rand((), generator=generator, dtype=torch.float64).item()


def crop_box(height: int, width: int, generator: torch.Generator) -> tuple[int, int, int, int]:
    """torchvision's ``RandomResizedCrop.get_params`` (scale 0.4-1, ratio 3/4-4/3) drawing from ``generator`` only."""
    low_ratio, high_ratio = CROP_RATIO
    for _ in range(10):
        area = height * width * _uniform(*CROP_SCALE, generator)
        aspect = math.exp(_uniform(math.log(low_ratio), math.log(high_ratio), generator))
        w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (), generator=generator))
            left = int(torch.randint(0, width - w + 1, (), generator=generator))
            return top, left, h, w
    w, h = width, height  # fallback: the centre crop closest to the ratio range
    if width / height < low_ratio:
        h = round(width / low_ratio)
    elif width / height > high_ratio:
        w = round(height * high_ratio)
    return (height - h) // 2, (width - w) // 2, h, w


def draw_jitter(generator: torch.Generator) -> Jitter:
    """``ColorJitter.get_params``: a random order of the four operations, then one factor each."""
    order = tuple(int(i) for i in torch.randperm(4, generator=generator))
    return Jitter(order, *(_uniform(low, high, generator) for low, high in (BRIGHTNESS, CONTRAST, SATURATION, HUE)))


def draw_params(height: int, width: int, generator: torch.Generator, color_jitter: float = COLOR_JITTER_P) -> AugmentParams:
    """Every random choice of one view, in the pipeline's order: crop, flip (p 0.5), jitter (p ``color_jitter``)."""
    crop = crop_box(height, width, generator)
    flip = bool(torch.rand((), generator=generator) < 0.5)
    applied = bool(torch.rand((), generator=generator) < color_jitter)
    return AugmentParams(crop, flip, draw_jitter(generator) if applied else None)


@dataclass(frozen=True)
class TrainTransform:
    """A class rather than a closure so the dataset pickles into spawned loader workers."""

    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    color_jitter: float = COLOR_JITTER_P

    def __call__(self, image: Image.Image, generator: torch.Generator) -> torch.Tensor:
        image = image if image.mode == "RGB" else image.convert("RGB")
        return self.apply(image, draw_params(image.height, image.width, generator, self.color_jitter))

    def apply(self, image: Image.Image, params: AugmentParams) -> torch.Tensor:
        """The view of an RGB image for given parameters: the official pipeline's operations, in its order."""
        image = TF.resized_crop(image, *params.crop, [self.image_size, self.image_size], InterpolationMode.BICUBIC)
        if params.flip:
            image = TF.hflip(image)
        if params.jitter is not None:
            factors = (params.jitter.brightness, params.jitter.contrast, params.jitter.saturation, params.jitter.hue)
            for index in params.jitter.order:
                image = JITTER_OPS[index](image, factors[index])
        return TF.normalize(TF.to_tensor(image), list(self.mean), list(self.std))


def train_transform(image_size: int, mean: Sequence[float], std: Sequence[float], color_jitter: float = COLOR_JITTER_P) -> TrainTransform:
    """AIM's augmentation, then normalisation; all randomness comes from the generator passed with each
    image, never the global RNG, so an image's view depends on its slot alone: in any worker, in any
    order, after any restart."""
    return TrainTransform(image_size, tuple(mean), tuple(std), color_jitter)
