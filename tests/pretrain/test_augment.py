"""The training augmentation: shape, normalisation, only the given generator, and how its choices are distributed.

That it computes what l3m's torchvision pipeline computes (same parameters, same output) is checked
against the golden fixtures in ``test_official_equality.py``.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from aimbench.pretrain.augment import BRIGHTNESS, CONTRAST, HUE, SATURATION, draw_params, train_transform

SIZE = 16


def test_the_transform_shape_normalisation_and_only_the_given_generator() -> None:
    transform = train_transform(SIZE, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    gray = Image.new("L", (40, 20), 128)  # not RGB, not square
    before = torch.get_rng_state()
    out = train_transform(SIZE, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), color_jitter=0.0)(gray, torch.Generator().manual_seed(0))
    assert torch.equal(torch.get_rng_state(), before)
    assert out.shape == (3, SIZE, SIZE) and out.dtype == torch.float32
    assert torch.allclose(out, torch.full_like(out, (128 / 255 - 0.5) / 0.25), atol=1e-5)
    # with the jitter, brightness moves the grey level of most views (contrast, saturation and hue leave a flat grey)
    levels = {round(transform(gray, torch.Generator().manual_seed(seed)).mean().item(), 4) for seed in range(20)}
    assert len(levels) > 10
    noise = Image.fromarray(np.random.default_rng(1).integers(0, 256, (48, 32, 3), dtype=np.uint8)).convert("RGBA")
    views = [transform(noise, torch.Generator().manual_seed(seed)) for seed in (7, 7, 8)]
    assert torch.equal(views[0], views[1]) and not torch.equal(views[0], views[2])
    assert torch.equal(torch.get_rng_state(), before)
    # flips: a left-dark, right-bright image keeps or swaps its halves about half the time
    halves = Image.fromarray(np.repeat(np.repeat(np.array([[0, 255]], dtype=np.uint8), 32, axis=0), 16, axis=1))
    views = [transform(halves, torch.Generator().manual_seed(s)) for s in range(200)]
    flipped = sum(bool(v[:, :, : SIZE // 2].mean() > v[:, :, SIZE // 2 :].mean()) for v in views)
    assert 70 < flipped < 130


def test_jitter_is_applied_about_80_percent_of_the_time_in_a_random_order_with_factors_in_range() -> None:
    draws = [draw_params(40, 30, torch.Generator().manual_seed(seed)) for seed in range(2000)]
    jitters = [d.jitter for d in draws if d.jitter is not None]
    assert 0.77 < len(jitters) / len(draws) < 0.83 and 0.46 < np.mean([d.flip for d in draws]) < 0.54
    assert all(sorted(j.order) == [0, 1, 2, 3] for j in jitters) and len({j.order for j in jitters}) == 24
    for name, (low, high) in (("brightness", BRIGHTNESS), ("contrast", CONTRAST), ("saturation", SATURATION), ("hue", HUE)):
        values = np.array([getattr(j, name) for j in jitters])
        assert low <= values.min() and values.max() <= high and abs(values.mean() - (low + high) / 2) < 0.02 * (high - low) * 3
    assert all(draw_params(40, 30, torch.Generator().manual_seed(s), color_jitter=0.0).jitter is None for s in range(50))
