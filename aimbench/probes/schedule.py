"""What every trained probe follows over time: its learning-rate schedule and its data order.

The schedule is linear warmup from 0, then cosine to 0, as a multiplier of each parameter group's
own learning rate, so every (lr, wd) head follows the same shape at its own scale. The data order
of an epoch is a permutation that depends only on (seed, epoch), so a resumed run draws exactly
the batches an uninterrupted one would, without saving any generator state."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from aimbench.probes.config import AttentiveProbeConfig, LinearProbeConfig, grid_points, scaled_lr


def grid_optimizer(
    config: LinearProbeConfig | AttentiveProbeConfig, heads: Sequence[tuple[list[torch.Tensor], list[torch.Tensor]]]
) -> torch.optim.AdamW:
    """AdamW with one pair of parameter groups per grid point: ``heads[i]`` holds the (decayed,
    not decayed) parameters of grid point i, whose lr is scaled from the config's base batch."""
    groups = []
    for (decay, no_decay), (lr, wd) in zip(heads, grid_points(config), strict=True):
        groups.append({"params": decay, "lr": scaled_lr(lr, config), "weight_decay": wd})
        groups.append({"params": no_decay, "lr": scaled_lr(lr, config), "weight_decay": 0.0})  # biases
    return torch.optim.AdamW(groups)


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))


def warmup_cosine_schedule(
    optimizer: torch.optim.Optimizer, epochs: int, steps_per_epoch: int, warmup_fraction: float
) -> torch.optim.lr_scheduler.LambdaLR:
    total = max(epochs * steps_per_epoch, 1)
    warmup = round(warmup_fraction * total)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, warmup, total))


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    order = epoch_order(n, seed, epoch).tolist()
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]
