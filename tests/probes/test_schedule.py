"""The optimizer every trained probe shares: per-head gradient clipping and the decay exclusions."""

from __future__ import annotations

import math

import pytest
import torch

from aimbench.probes.protocol import default_config
from aimbench.probes.schedule import clip_per_head, grid_optimizer, warmup_cosine, warmup_cosine_schedule


def test_clip_per_head_clips_each_head_as_clip_grad_norm_would_alone() -> None:
    generator = torch.Generator().manual_seed(0)
    weight = torch.zeros(3, 4, 5, requires_grad=True)
    bias = torch.zeros(3, 5, requires_grad=True)
    weight.grad = torch.randn(3, 4, 5, generator=generator) * torch.tensor([0.01, 1.0, 100.0]).view(3, 1, 1)
    bias.grad = torch.randn(3, 5, generator=generator)
    expected = []
    for head in range(3):  # each head on its own, the way torch clips one model
        alone = [torch.zeros(4, 5, requires_grad=True), torch.zeros(5, requires_grad=True)]
        alone[0].grad, alone[1].grad = weight.grad[head].clone(), bias.grad[head].clone()
        torch.nn.utils.clip_grad_norm_(alone, max_norm=2.0)
        expected.append(alone)
    clip_per_head([weight, bias], max_norm=2.0)
    for head, (w, b) in enumerate(expected):
        torch.testing.assert_close(weight.grad[head], w.grad)
        torch.testing.assert_close(bias.grad[head], b.grad)
    assert float(weight.grad[0].norm()) < 2.0  # a small head is left as it is, not scaled with the others


def test_grid_optimizer_keeps_the_named_parameters_out_of_decay() -> None:
    config = default_config("linear", "aim-v1", learning_rates=(0.1,), weight_decays=(0.5,), no_weight_decay=("bias",), batch_size=512)
    weight, bias = torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)
    decayed, kept = grid_optimizer(config, [{"weight": [weight], "bias": [bias]}]).param_groups
    assert (decayed["params"], decayed["weight_decay"], kept["params"], kept["weight_decay"]) == ([weight], 0.5, [bias], 0.0)
    assert decayed["lr"] == kept["lr"] == 0.1 * 512 / 256  # scaled from the base batch


def test_the_cosine_ends_at_the_same_min_lr_for_every_head_and_at_zero_without_one() -> None:
    config = default_config("attentive", learning_rates=(1e-3, 1e-2), weight_decays=(0.1,), warmup_fraction=0.2)
    heads = [{"linear.weight": [torch.zeros(2, requires_grad=True)]} for _ in range(2)]
    for min_lr in (0.0, 1e-5):
        optimizer = grid_optimizer(config, heads)
        peaks, seen = [group["lr"] for group in optimizer.param_groups], []
        schedule = warmup_cosine_schedule(optimizer, epochs=2, steps_per_epoch=5, warmup_fraction=0.2, min_lr=min_lr)
        for _ in range(10):
            seen.append([group["lr"] for group in optimizer.param_groups])
            optimizer.step()
            schedule.step()
        assert seen[0] == [peak / 2 for peak in peaks] and seen[2] == pytest.approx(peaks)  # warmup over 2 steps from 0, then the peak
        ends = [lrs[-1] for lrs in zip(*seen)]  # the last step's lr, one step short of the end of the cosine
        assert ends == pytest.approx([min_lr + (peak - min_lr) * warmup_cosine(9, 2, 10) for peak in peaks])
        assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([min_lr] * 4)  # the end: min_lr, whatever the peak
    before = [(step + 1) / 3 if step < 3 else 0.5 * (1 + math.cos(math.pi * (step - 3) / 7)) for step in range(10)]
    assert [warmup_cosine(step, 3, 10) for step in range(10)] == before  # without a floor: bit for bit the schedule it always was


def test_adamw_takes_the_configs_betas() -> None:
    config = default_config("attentive", learning_rates=(1e-3,), weight_decays=(0.1,))
    heads = [{"linear.weight": [torch.zeros(2, requires_grad=True)]}]
    assert all(group["betas"] == (0.9, 0.999) for group in grid_optimizer(config, heads).param_groups)  # torch's default
    assert all(group["betas"] == (0.8, 0.95) for group in grid_optimizer(config, heads, betas=(0.8, 0.95)).param_groups)
