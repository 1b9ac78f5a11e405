"""The optimizer every trained probe shares: per-head gradient clipping and the decay exclusions."""

from __future__ import annotations

import torch

from aimbench.probes.protocol import default_config
from aimbench.probes.schedule import clip_per_head, grid_optimizer


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
    config = default_config("linear", learning_rates=(0.1,), weight_decays=(0.5,), no_weight_decay=("bias",), batch_size=512)
    weight, bias = torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)
    decayed, kept = grid_optimizer(config, [{"weight": [weight], "bias": [bias]}]).param_groups
    assert (decayed["params"], decayed["weight_decay"], kept["params"], kept["weight_decay"]) == ([weight], 0.5, [bias], 0.0)
    assert decayed["lr"] == kept["lr"] == 0.1 * 512 / 256  # scaled from the base batch
