"""Linear probes for every (layer, token kind, learning rate), trained together.

All heads share one pass over the cached features: their logits are stacked and a single
cross-entropy call trains them all (the heads' parameters are disjoint, so each gets exactly its
own gradient). Heads start at zero and see the same seeded data order, so a head's result does
not depend on which other heads are trained beside it. Each learning rate is its own parameter
group with the same warmup-free cosine schedule. Features are standardised with train statistics (the eval-mode equivalent of a
BatchNorm without affine parameters).

Selection uses val only: for every layer the head (token kind, lr) with the best val top-1 is
kept, and only those selected heads are ever scored on test. The best layer is chosen by val
top-1 too; ties go to the first candidate in grid order (shallower layer, patch mean before cls,
smaller lr), so results are deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from aimbench.probes.config import LinearProbeConfig
from aimbench.probes.features import FeatureSource, PooledFeatures


@dataclass(frozen=True)
class HeadScore:
    """One trained head and its val top-1 (test is never computed for unselected heads)."""

    layer: int
    token: str
    lr: float
    weight_decay: float
    val_top1: float


@dataclass(frozen=True)
class LayerResult:
    """The val-selected head of one layer (or layer window) with its val and test top-1.

    ``lr``/``weight_decay`` are None for heads that were not trained here (released heads)."""

    layer: int
    token: str
    lr: float | None
    weight_decay: float | None
    val_top1: float
    test_top1: float


@dataclass(frozen=True)
class ProbeResult:
    heads: list[HeadScore]
    layers: list[LayerResult]
    best: LayerResult
    last: LayerResult


def _standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    mean = train.mean(dim=0, keepdim=True)
    std = train.std(dim=0, keepdim=True).clamp_min(1e-6)
    return [(x - mean) / std for x in (train, *others)]


def _top1(features: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Top-1 accuracy of every head: features (N, S, D), weights (G, S, D, C) -> (G, S)."""
    correct = torch.zeros(weights.shape[:2], device=features.device)
    for start in range(0, len(features), 4096):
        x, y = features[start : start + 4096], labels[start : start + 4096]
        logits = torch.einsum("nsd,gsdc->ngsc", x, weights) + bias
        correct += (logits.argmax(-1) == y[:, None, None]).sum(0)
    return correct / max(len(features), 1)


def train_linear_probes(
    train: PooledFeatures,
    val: PooledFeatures,
    test: PooledFeatures,
    sources: Sequence[FeatureSource],
    num_classes: int,
    config: LinearProbeConfig,
    seed: int,
    device: torch.device | str = "cpu",
    on_epoch: Callable[[int], None] | None = None,
) -> ProbeResult:
    device = torch.device(device)
    x_train, x_val, x_test = (t.to(device) for t in _standardise(train.features, val.features, test.features))
    y_train, y_val, y_test = (f.labels.to(device) for f in (train, val, test))
    n, s, d = x_train.shape
    lrs = config.learning_rates
    # zero init and a data order that depends only on (seed, n): every head trains exactly as it
    # would alone, whatever else is in the grid or the layer set
    generator = torch.Generator().manual_seed(seed)
    weights = [torch.nn.Parameter(torch.zeros(s, d, num_classes, device=device)) for _ in lrs]
    biases = [torch.nn.Parameter(torch.zeros(s, num_classes, device=device)) for _ in lrs]
    optimizer = torch.optim.AdamW(
        [{"params": [w, b], "lr": lr} for w, b, lr in zip(weights, biases, lrs)],
        weight_decay=config.weight_decay,
    )
    steps_per_epoch = math.ceil(n / config.batch_size)
    total = max(config.epochs * steps_per_epoch, 1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
    for epoch in range(config.epochs):
        order = torch.randperm(n, generator=generator).to(device)
        for start in range(0, n, config.batch_size):
            idx = order[start : start + config.batch_size]
            x, y = x_train[idx], y_train[idx]
            logits = torch.einsum("bsd,gsdc->bgsc", x, torch.stack(weights)) + torch.stack(biases)
            heads = logits.shape[1] * logits.shape[2]
            loss = F.cross_entropy(logits.reshape(-1, num_classes), y.repeat_interleave(heads), reduction="sum")
            optimizer.zero_grad(set_to_none=True)
            (loss / len(idx)).backward()
            optimizer.step()
            schedule.step()
        if on_epoch is not None:
            on_epoch(epoch + 1)

    with torch.no_grad():
        w, b = torch.stack(weights).detach(), torch.stack(biases).detach()
        val_acc = _top1(x_val, y_val, w, b).cpu()  # (G, S)
        heads = [
            HeadScore(src.layer, src.token, lr, config.weight_decay, float(val_acc[g, i]))
            for g, lr in enumerate(lrs)
            for i, src in enumerate(sources)
        ]
        layers: list[LayerResult] = []
        for layer in sorted({src.layer for src in sources}):
            candidates = [(i, src) for i, src in enumerate(sources) if src.layer == layer]
            # grid order: token kind, then lr; strict '>' keeps the first of equal scores
            best_i, best_g, best_val = candidates[0][0], 0, -1.0
            for i, _ in candidates:
                for g in range(len(lrs)):
                    if float(val_acc[g, i]) > best_val:
                        best_i, best_g, best_val = i, g, float(val_acc[g, i])
            test_acc = _top1(x_test[:, best_i : best_i + 1], y_test, w[best_g : best_g + 1, best_i : best_i + 1], b[best_g : best_g + 1, best_i : best_i + 1])
            layers.append(
                LayerResult(layer, sources[best_i].token, lrs[best_g], config.weight_decay, best_val, float(test_acc[0, 0]))
            )
    best = max(layers, key=lambda r: (r.val_top1, -r.layer))
    return ProbeResult(heads=heads, layers=layers, best=best, last=layers[-1])
