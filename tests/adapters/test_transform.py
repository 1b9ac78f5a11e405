"""The eval transform a card describes: resize (short side or squash), centre crop, normalise."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from aimbench.adapters.base import build_eval_transform
from aimbench.cards.backbone_card import Preprocess


def gradient(width: int = 64, height: int = 32) -> Image.Image:
    """Grey levels rising from 0 at the left edge to 255 at the right edge."""
    row = np.linspace(0, 255, width).astype(np.uint8)
    return Image.fromarray(np.tile(row, (height, 1)))


def test_shortest_side_crops_the_edges_and_squash_keeps_them() -> None:
    common = dict(image_size=16, resize_size=16, interpolation="bilinear", mean=(0.0,) * 3, std=(1.0,) * 3)
    shortest = build_eval_transform(Preprocess(**common))(gradient())
    squash = build_eval_transform(Preprocess(**common, resize_mode="squash"))(gradient())
    assert shortest.shape == squash.shape == (3, 16, 16)
    # the centre crop of a 2:1 image keeps only the middle half of the gradient
    assert 0.2 < shortest[0, 0, 0] < 0.3 and 0.7 < shortest[0, 0, -1] < 0.8
    # squashing keeps the whole width: the edges stay (close to) black and white
    assert squash[0, 0, 0] < 0.05 and squash[0, 0, -1] > 0.95


def test_normalisation_uses_the_card_mean_and_std() -> None:
    pre = Preprocess(image_size=8, resize_size=8, interpolation="nearest", mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))
    out = build_eval_transform(pre)(Image.new("RGB", (8, 8), (255, 255, 255)))
    assert torch.allclose(out[:, 0, 0], torch.tensor([2.0, 1.0, 0.5]))
