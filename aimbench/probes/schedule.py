"""The learning-rate schedule every trained probe uses: linear warmup from 0, then cosine to 0.

A multiplier of each parameter group's own learning rate, so every (lr, wd) head follows the same
shape at its own scale."""

from __future__ import annotations

import math

import torch


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
