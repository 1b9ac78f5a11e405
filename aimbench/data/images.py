"""Labelled images with lazy decoding, and their view as a torch dataset.

Every source (arrays, image folders, Hugging Face datasets) is reduced to a function that returns
the PIL image at an index plus an int64 label array, so splits can be carved and capped by
index without decoding anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # torch is imported by whoever runs a backbone; listing or checking tasks never needs it
    import torch


@dataclass(frozen=True)
class LabelledImages:
    """Images ``get_image(indices[i])`` with labels ``labels[i]``."""

    get_image: Callable[[int], Image.Image]
    labels: np.ndarray
    indices: np.ndarray

    @classmethod
    def from_arrays(cls, images: np.ndarray, labels: np.ndarray) -> LabelledImages:
        """uint8 images shaped (N, H, W) or (N, H, W, 3)."""
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or len(images) != len(labels):
            raise ValueError(f"expected uint8 (N,H,W[,3]) images matching {len(labels)} labels, got {images.shape}")
        return cls(lambda i: Image.fromarray(images[i]), labels.astype(np.int64), np.arange(len(labels)))

    def __len__(self) -> int:
        return len(self.indices)

    def subset(self, positions: np.ndarray) -> LabelledImages:
        """The images at ``positions`` (positions within this view, not raw indices)."""
        positions = np.asarray(positions, dtype=np.int64)
        return LabelledImages(self.get_image, self.labels[positions], self.indices[positions])

    def image(self, position: int) -> Image.Image:
        return self.get_image(int(self.indices[position]))


class TransformedImages:
    """``LabelledImages`` through a backbone's eval transform: a map-style dataset for a DataLoader."""

    def __init__(self, images: LabelledImages, transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images.image(position)), int(self.images.labels[position])
