"""What every trained probe follows over time: its optimizer, learning-rate schedule, gradient
clipping and data order.

The schedule is linear warmup from 0, then cosine to 0 (or to a minimum learning rate, the same
for every head, as timm's ``lr_min``), as a multiplier of each parameter group's own learning rate,
so every (lr, wd) head follows the same shape at its own scale. Gradient
clipping is per head, so one head's large gradient never scales another's: a head in a grid trains
as it would alone. The data order of an epoch is a permutation that depends only on (seed, epoch),
so a resumed run draws exactly the batches an uninterrupted one would, without saving any
generator state."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence

import torch

from aimbench.probes.config import TrainedProbeConfig, grid_points, scaled_lr


def grid_param_groups(config: TrainedProbeConfig, heads: Sequence[Mapping[str, Sequence[torch.Tensor]]]) -> list[dict]:
    """One pair of parameter groups per grid point: ``heads[i]`` maps the parameter names of grid
    point i to its tensors; those named in ``config.no_weight_decay`` form the group without weight
    decay. Each group's lr is scaled from the config's base batch."""
    groups = []
    for named, (lr, wd) in zip(heads, grid_points(config), strict=True):
        for decayed in (True, False):
            params = [t for name, tensors in named.items() if (name not in config.no_weight_decay) == decayed for t in tensors]
            groups.append({"params": params, "lr": scaled_lr(lr, config), "weight_decay": wd if decayed else 0.0})
    return groups


def grid_optimizer(
    config: TrainedProbeConfig,
    heads: Sequence[Mapping[str, Sequence[torch.Tensor]]],
    fused: bool = False,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.AdamW:
    """AdamW over :func:`grid_param_groups`. ``fused``: torch's one-kernel AdamW (CPU and CUDA), the
    same update in a single pass over each tensor. ``betas``: AdamW's (torch's default unless a
    recipe says otherwise)."""
    return torch.optim.AdamW(grid_param_groups(config, heads), fused=fused or None, betas=betas)


def clip_per_head(tensors: Sequence[torch.Tensor], max_norm: float) -> None:
    """Clip each head's gradient norm to ``max_norm`` on its own, as ``clip_grad_norm_`` would for
    the head alone: every tensor stacks the same heads along its first axis, so head h's gradient
    is the h-th slice of each."""
    clip_grads_per_head([t.grad for t in tensors if t.grad is not None], max_norm)


def clip_grads_per_head(grads: Sequence[torch.Tensor], max_norm: float) -> None:
    """:func:`clip_per_head` on the gradients themselves (head axis first), in place."""
    if not grads:
        return
    norms = torch.stack([g.flatten(1).float().pow(2).sum(dim=1) for g in grads]).sum(dim=0).sqrt()
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for grad in grads:
        grad.mul_(scale.view(-1, *[1] * (grad.dim() - 1)).to(grad.dtype))


def warmup_cosine(step: int, warmup: int, total: int, floor: float = 0.0) -> float:
    """The multiplier of the peak lr at ``step``: linear from 0 over ``warmup`` steps, then cosine
    from 1 down to ``floor`` at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    cosine = 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))
    return floor + (1 - floor) * cosine


def warmup_cosine_schedule(
    optimizer: torch.optim.Optimizer, epochs: int, steps_per_epoch: int, warmup_fraction: float, min_lr: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """:func:`warmup_cosine` for every parameter group; the cosine of each ends at ``min_lr``,
    an absolute learning rate the same for every group (so each group's multiplier ends at
    min_lr / its own lr), as timm's ``lr_min``. With 0 every group ends at 0."""
    total = max(epochs * steps_per_epoch, 1)
    warmup = round(warmup_fraction * total)

    def multiplier(floor: float) -> Callable[[int], float]:
        return lambda step: warmup_cosine(step, warmup, total, floor)

    floors = [min_lr / group.get("initial_lr", group["lr"]) for group in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, [multiplier(floor) for floor in floors])


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    order = epoch_order(n, seed, epoch).tolist()
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def head_seed(seed: int, layer_set: str, lr: float, weight_decay: float) -> int:
    """The init seed of one head: a function of its identity only (``layer_set`` may name its token
    kind too), never of the grid around it, so a head trained in a grid equals the same head alone."""
    digest = hashlib.sha256(f"{seed}|{layer_set}|{lr!r}|{weight_decay!r}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**63)
