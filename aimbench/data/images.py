"""Labelled images with lazy decoding, and their view as a torch dataset; the pixel limit.

Every source (arrays, image folders, Hugging Face datasets) is reduced to a function that returns
the PIL image at an index plus an int64 label array, so splits can be carved and capped by
index without decoding anything.

Image files are untrusted input: a 0.5 MB PNG can declare 169 million pixels and take 2.2 GB to
decode. :func:`open_limited` reads the header only (PIL's ``open`` is lazy) and refuses an image
over ``AIMBENCH_MAX_IMAGE_PIXELS`` before any pixel is decoded; ``tasks check`` and pre-training
count such images as skipped, like unreadable ones, and an evaluation stops at the first with its
path. The default is PIL's own warning threshold, 89,478,485 pixels (about 256 MB as RGB), far
above any benchmark image (the largest ImageNet and fMoW images are under 20 million).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np
from PIL import Image

from aimbench.errors import UserError

if TYPE_CHECKING:  # torch is imported by whoever runs a backbone; listing or checking tasks never needs it
    import torch


MAX_PIXELS_ENV = "AIMBENCH_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 89_478_485  # PIL's DecompressionBombWarning threshold (1024**3 // 4 // 3)


class ImageTooLarge(UserError):
    """An image over the pixel limit: skipped and counted where unreadable images are (``tasks
    check``, pre-training); an evaluation, which never skips an image, stops with this one line."""


def max_image_pixels() -> int:
    """The limit from ``AIMBENCH_MAX_IMAGE_PIXELS`` (a positive integer), else the default."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip().replace("_", "")
    if not text:
        return DEFAULT_MAX_PIXELS
    if not text.isdigit() or int(text) < 1:
        raise UserError(f"{MAX_PIXELS_ENV} must be a positive number of pixels, got {os.environ[MAX_PIXELS_ENV]!r}")
    return int(text)


@contextmanager
def open_limited(source: str | Path | IO[bytes], formats: tuple[str, ...] | None = None) -> Iterator[Image.Image]:
    """``Image.open`` (the header only), refusing an image over the pixel limit before it decodes."""
    limit, where = max_image_pixels(), source if isinstance(source, (str, Path)) else getattr(source, "name", "image")
    if Image.MAX_IMAGE_PIXELS is not None and limit > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limit  # PIL refuses at twice its own threshold: a raised limit must hold
    with warnings.catch_warnings():  # PIL's own bomb warning: the limit below decides
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(source, formats=formats)
        except Image.DecompressionBombError as exc:  # over twice PIL's threshold, refused by PIL itself
            raise ImageTooLarge(f"{where}: {exc}") from None
    with image:
        width, height = image.size
        if width * height > limit:
            raise ImageTooLarge(f"{where}: {width}x{height} = {width * height:,} pixels, over the limit of {limit:,} "
                                f"(raise {MAX_PIXELS_ENV} to decode it)")  # fmt: skip
        yield image


BIT_DEPTH = "aimbench_bit_depth"  # image.info: the bits per sample an image had before it was brought to 8
_DEPTHS = {"1": 1, "I;16": 16, "I;16B": 16, "I;16L": 16, "I;16N": 16, "I": 32, "F": 32}


def bit_depth(image: Image.Image) -> int:
    """Bits per sample of a decoded image as its file stored it (8 for every 8-bit mode)."""
    return int(image.info.get(BIT_DEPTH, _DEPTHS.get(image.mode, 8)))


def to_eight_bit(image: Image.Image) -> Image.Image:
    """A 16-bit or 32-bit integer or float image scaled to the 8-bit range the transforms expect.

    PIL's ``convert`` clips such images at 255 (99 % of a 0..65535 ramp becomes white). Scaling
    instead: 16-bit files divide by 257 (a 16-bit copy of an 8-bit image, v * 257, gives v back
    exactly); 32-bit images by the range their values span: [0, 1] (float), [0, 255], [0, 65535],
    else their own minimum to maximum. Every other mode is returned as it is."""
    if image.mode not in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return image
    pixels = np.asarray(image, dtype=np.float64)
    low, high = (float(pixels.min()), float(pixels.max())) if pixels.size else (0.0, 0.0)
    if image.mode.startswith("I;16"):
        scaled = pixels / 257
    elif low >= 0 and high <= (1 if image.mode == "F" else 255):
        scaled = pixels * (255 if image.mode == "F" else 1)
    elif low >= 0 and high <= 255:
        scaled = pixels
    elif low >= 0 and high <= 65535:
        scaled = pixels / 257
    else:
        scaled = (pixels - low) * (255 / (high - low)) if high > low and np.isfinite(high - low) else np.zeros_like(pixels)
    eight = Image.fromarray(np.nan_to_num(scaled).round().clip(0, 255).astype(np.uint8))
    eight.info[BIT_DEPTH] = _DEPTHS[image.mode]
    return eight


@dataclass(frozen=True)
class Stored:
    """Where one image file's bytes are kept, for finding test images that train or val also hold.

    ``identity`` makes two images the same one (a file's device and inode through any link);
    ``size`` is their length in bytes (-1: unknown, never compared: a file that
    cannot be stat-ed, or is not a regular file, which reading could hang on), since only images
    of one size can hold the same bytes; ``read`` returns the bytes as stored (never decoded),
    ``cost`` is what reading them costs in bytes (a file adds the price of an open), ``name`` says
    which image it is in a message."""

    identity: Hashable
    size: int
    name: str
    read: Callable[[], bytes]
    cost: int


@dataclass(frozen=True)
class LabelledImages:
    """Images ``get_image(indices[i])`` with labels ``labels[i]``; so that splits sharing images are
    found without decoding them, ``stored(indices[i])`` says where a file's bytes are kept
    (:class:`Stored`), and ``rows`` is the array an array source's images are rows of (compared
    all at once: one ``Stored`` per MNIST row would cost a second); neither: the source cannot tell
    cheaply (Hugging Face rows)."""

    get_image: Callable[[int], Image.Image]
    labels: np.ndarray
    indices: np.ndarray
    stored: Callable[[int], Stored] | None = None
    rows: np.ndarray | None = None

    @classmethod
    def from_arrays(cls, images: np.ndarray, labels: np.ndarray) -> LabelledImages:
        """uint8 images shaped (N, H, W) or (N, H, W, 3)."""
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or len(images) != len(labels):
            raise ValueError(f"expected uint8 (N,H,W[,3]) images matching {len(labels)} labels, got {images.shape}")
        return cls(lambda i: Image.fromarray(images[i]), labels.astype(np.int64), np.arange(len(labels)), rows=images)

    def __len__(self) -> int:
        return len(self.indices)

    def subset(self, positions: np.ndarray) -> LabelledImages:
        """The images at ``positions`` (positions within this view, not raw indices)."""
        positions = np.asarray(positions, dtype=np.int64)
        return LabelledImages(self.get_image, self.labels[positions], self.indices[positions], self.stored, self.rows)

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
