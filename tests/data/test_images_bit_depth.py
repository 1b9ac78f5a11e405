"""16-bit and float images are scaled to the 8-bit range, never clipped (aimbench.data.images.to_eight_bit)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aimbench.data.images import bit_depth, to_eight_bit
from aimbench.data.source_base import open_image

RAMP = np.arange(256, dtype=np.uint8).reshape(16, 16)


def test_a_16_bit_png_reads_back_as_its_8_bit_original(tmp_path: Path) -> None:
    Image.fromarray(RAMP.astype(np.uint16) * 257).save(tmp_path / "ramp16.png")
    image = open_image(tmp_path / "ramp16.png")
    assert image.mode == "L" and bit_depth(image) == 16
    assert np.array_equal(np.asarray(image), RAMP)  # PIL's convert would have made 255 of 256 values white


@pytest.mark.parametrize(
    ("pixels", "expected"),
    [
        (RAMP.astype(np.float32) / 255, RAMP),  # float in [0, 1]
        (RAMP.astype(np.float32), RAMP),  # float already in [0, 255]
        (RAMP.astype(np.int32) * 257, RAMP),  # 32-bit integers spanning 16 bits
        (RAMP.astype(np.float32) * 4 - 100, RAMP),  # anything else: its own range
    ],
    ids=["float-unit", "float-255", "int-16-bit", "float-own-range"],
)
def test_float_and_32_bit_tiffs_are_scaled_by_their_range(tmp_path: Path, pixels: np.ndarray, expected: np.ndarray) -> None:
    Image.fromarray(pixels).save(tmp_path / "image.tif")
    image = open_image(tmp_path / "image.tif")
    assert image.mode == "L" and bit_depth(image) == 32
    assert np.abs(np.asarray(image).astype(int) - expected).max() <= 1


def test_eight_bit_images_pass_through_untouched() -> None:
    image = Image.fromarray(RAMP)
    assert to_eight_bit(image) is image and bit_depth(image) == 8
