"""Training views for online probes: seeded by (seed, epoch, position); light and strong recipes;
pooled online inputs for linear probes."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import count_forwards
from timm.data.auto_augment import RandAugment
from torchvision.transforms import InterpolationMode, v2

from aimbench.adapters.base import Backbone
from aimbench.cards.backbone_card import Preprocess
from aimbench.data import TaskSplits
from aimbench.probes.features.layer_sets import parse_layer_sets
from aimbench.probes.features.view_recipe import ViewRecipe
from aimbench.probes.features.views import AugmentedViews, online_probe_inputs, train_transform
from aimbench.probes.schedule import epoch_batches


def test_views_are_seeded_by_epoch_and_position(digits_48: TaskSplits, micro_cls: Backbone) -> None:
    transform = train_transform(micro_cls.preprocess, "rrc_flip", 0.08)
    views = AugmentedViews(digits_48.train, transform, seed=0)
    first = views[3][0]
    assert torch.equal(views[3][0], first)  # same (epoch, position): same view, whatever ran before
    views.epoch = 1
    assert not torch.equal(views[3][0], first)
    assert epoch_batches(10, 4, 0, 0) == epoch_batches(10, 4, 0, 0) != epoch_batches(10, 4, 0, 1)
    assert sorted(i for b in epoch_batches(10, 4, 0, 0) for i in b) == list(range(10))


def test_strong_augmentation_adds_randaugment_and_erasing(digits_48: TaskSplits, micro_cls: Backbone) -> None:
    pre = micro_cls.preprocess
    light, strong = (AugmentedViews(digits_48.train, train_transform(pre, name, 0.08), seed=0) for name in ("rrc_flip", "strong"))
    names = [type(t).__name__ for t in train_transform(pre, "strong", 0.08).transforms]
    assert "RandAugment" in names and names[-1] == "RandomErasing"
    assert strong[0][0].shape == light[0][0].shape == (3, pre.image_size, pre.image_size)
    assert any(not torch.equal(strong[i][0], light[i][0]) for i in range(5))
    assert torch.equal(train_transform(pre, "none", 0.08)(digits_48.train.image(0)), micro_cls.transform()(digits_48.train.image(0)))
    bicubic = train_transform(replace(pre, interpolation="bicubic"), "strong", 0.08)  # AIM's and timm's ViTs resample bicubically
    assert all(bicubic(digits_48.train.image(i)).shape == (3, pre.image_size, pre.image_size) for i in range(20))


def test_online_probe_inputs_are_seeded_batches_from_one_forward_each(micro_cls: Backbone, digits_48: TaskSplits) -> None:
    sets = parse_layer_sets("all,avg:1-2", micro_cls.depth)
    batches = online_probe_inputs(micro_cls, digits_48.train, sets, "rrc_flip", 0.08, seed=0, batch_size=16)
    calls = count_forwards(micro_cls)
    epoch0 = list(batches(0, 0))
    assert [tuple(x.shape) for x, _ in epoch0] == [(16, 4 * 2, micro_cls.dim)] * 3  # 4 layer sets x (patch mean, cls)
    assert [layers for _, layers in calls] == [[0, 1, 2]] * 3  # one forward per batch, every block at once
    resumed = list(batches(0, 1))  # a resumed epoch starts at its next batch, with the same views
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(epoch0[1:], resumed))
    assert not torch.equal(next(iter(batches(1, 0)))[0], epoch0[0][0])  # another epoch, other order and views
    # a window's input is the mean of its blocks' pooled outputs
    x, _ = epoch0[0]
    torch.testing.assert_close(x[:, 6], (x[:, 2] + x[:, 4]) / 2)


def _views_before_recipes(pre: Preprocess, augmentation: str, min_scale: float) -> v2.Compose:
    """train_transform as it was before view recipes existed, written out: what the default recipe must still draw."""
    interpolation = InterpolationMode(pre.interpolation)
    on_tensors = InterpolationMode.BILINEAR if interpolation is InterpolationMode.BICUBIC else interpolation
    strong = augmentation == "strong"
    return v2.Compose([
        v2.Lambda(lambda image: image.convert("RGB")), v2.PILToTensor(),
        v2.RandomResizedCrop(pre.image_size, scale=(min_scale, 1.0), interpolation=interpolation, antialias=True), v2.RandomHorizontalFlip(),
        *([v2.RandAugment(num_ops=2, magnitude=9, interpolation=on_tensors)] if strong else []),
        v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(pre.mean), std=list(pre.std)),
        *([v2.RandomErasing(p=0.25)] if strong else []),
    ])  # fmt: skip


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_the_default_recipe_draws_the_views_aimbench_always_drew(digits_48: TaskSplits, micro_cls: Backbone, interpolation: str) -> None:
    pre = replace(micro_cls.preprocess, interpolation=interpolation)
    for augmentation in ("rrc_flip", "strong"):
        now, before = (
            AugmentedViews(digits_48.train, build(pre, augmentation, 0.3), seed=1) for build in (train_transform, _views_before_recipes)
        )
        assert all(torch.equal(now[i][0], before[i][0]) for i in range(12)), augmentation


def test_timm_randaugment_replaces_colour_jitter_as_in_timm_and_is_seeded(digits_48: TaskSplits, micro_cls: Backbone) -> None:
    pre = replace(micro_cls.preprocess, interpolation="bicubic")
    aim_v2 = ViewRecipe(interpolation="bicubic", rand_augment="timm:rand-m9-mstd0.5-inc1", color_jitter=0.3, random_erasing=0.0)
    strong = train_transform(pre, "strong", 0.08, aim_v2)
    steps = [type(t) for t in strong.transforms]
    assert RandAugment in steps and v2.ColorJitter not in steps and v2.RandomErasing not in steps
    assert v2.ColorJitter in [type(t) for t in train_transform(pre, "rrc_flip", 0.08, aim_v2).transforms]  # without RandAugment: jitter
    views = AugmentedViews(digits_48.train, strong, seed=0)
    first = [views[i][0] for i in range(8)]
    random.seed(123)  # whatever the global generators hold, a view is a function of (seed, epoch, position)
    np.random.seed(123)
    state = (random.getstate(), np.random.get_state()[1].copy())
    assert all(torch.equal(views[i][0], first[i]) for i in range(8))
    assert random.getstate() == state[0] and (np.random.get_state()[1] == state[1]).all()  # and they are left as they were
    light = AugmentedViews(digits_48.train, train_transform(pre, "rrc_flip", 0.08, replace(aim_v2, color_jitter=None)), seed=0)
    assert any(not torch.equal(first[i], light[i][0]) for i in range(8))  # RandAugment changed some views
    assert all(view.shape == (3, pre.image_size, pre.image_size) and view.dtype == torch.float32 for view in first)


def test_timm_posterize_keeping_no_bit_is_black_as_before_pillow_13(digits_48: TaskSplits, micro_cls: Backbone) -> None:
    """rand-m9-mstd0.5-inc1 draws magnitude 10 now and then, where timm's increasing posterize keeps
    0 bits: Pillow 13 refuses that, older Pillow (what timm was written for) gave a black image."""
    strong = train_transform(micro_cls.preprocess, "strong", 0.08, ViewRecipe(rand_augment="timm:rand-m9-mstd0.5-inc1"))
    [augment] = [step for step in strong.transforms if isinstance(step, RandAugment)]
    [op] = [op for op in augment.ops if op.name == "PosterizeIncreasing"]
    op.prob, op.magnitude, op.magnitude_std = 1.0, 10, 0
    image = digits_48.train.image(0).convert("RGB")
    assert np.asarray(op(image)).max() == 0 and np.asarray(image).max() > 0
