"""Linear probes for every (layer set x token kind x learning rate x weight decay), trained together.

All heads share one pass over the cached features: their logits are stacked and a single
cross-entropy call trains them all (the heads' parameters are disjoint, so each gets exactly its
own gradient). Heads start at zero and see the same seeded data order, and gradient clipping is
per head, so a head's result does not depend on which other heads are trained beside it. Each
(lr, wd) pair is its own AdamW parameter group (the config's ``no_weight_decay`` parameters,
``weight`` or ``bias``, without decay) under the same warmup + cosine schedule shape; learning
rates are scaled linearly from the config's base batch to the batch used.

Features are standardised with train statistics: the population form of a BatchNorm without
affine parameters. A concatenated head (``patch_mean+cls``) is two weight blocks, one per
pooling, whose logits add: exactly a linear map on the concatenation, and a BatchNorm on the
concatenation normalises each half on its own.

Selection follows :mod:`aimbench.probes.results`: val only, ties to the first in grid order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from aimbench.probes.checkpoint import Checkpointing
from aimbench.probes.config import LinearProbeConfig, grid_points
from aimbench.probes.features import PooledFeatures, ProbeSource, head_inputs
from aimbench.probes.metrics import score_predictions, secondary_scores
from aimbench.probes.results import (
    HeadScore,
    LayerResult,
    ProbeResult,
    select_per_set,
    summarise,
)
from aimbench.probes.schedule import clip_per_head, epoch_order, grid_optimizer, warmup_cosine_schedule

CHUNK = 4096  # evaluation batch


def _statistics(train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature train mean and std: the population form of a BatchNorm without affine."""
    mean = train.mean(dim=0, keepdim=True)
    std = train.std(dim=0, keepdim=True).clamp_min(1e-6) if len(train) > 1 else torch.ones_like(mean)
    return mean, std


class _Heads:
    """The weights of every head at one (lr, wd) grid point: single-source and concatenated."""

    def __init__(self, singles: int, pairs: int, dim: int, classes: int, device: torch.device) -> None:
        self.w1 = torch.nn.Parameter(torch.zeros(singles, dim, classes, device=device))
        self.b1 = torch.nn.Parameter(torch.zeros(singles, classes, device=device))
        self.w2 = torch.nn.Parameter(torch.zeros(pairs, 2, dim, classes, device=device))
        self.b2 = torch.nn.Parameter(torch.zeros(pairs, classes, device=device))

    def by_name(self) -> dict[str, list[torch.nn.Parameter]]:
        """The parameters under the names a protocol's ``no_weight_decay`` uses."""
        return {"weight": [self.w1, self.w2], "bias": [self.b1, self.b2]}

    def clip(self, max_norm: float) -> None:
        """Clip the gradient of every head at this grid point to ``max_norm``, each on its own."""
        clip_per_head([self.w1, self.b1], max_norm)
        clip_per_head([self.w2, self.b2], max_norm)


def _logits(x: torch.Tensor, pair_index: torch.Tensor, grid: Sequence[_Heads]) -> torch.Tensor:
    """(B, S, D) features -> (B, G, S + P, C) logits of every head."""
    single = torch.einsum("bsd,gsdc->bgsc", x, torch.stack([h.w1 for h in grid])) + torch.stack([h.b1 for h in grid])
    if not len(pair_index):
        return single
    pairs = torch.einsum("bpkd,gpkdc->bgpc", x[:, pair_index], torch.stack([h.w2 for h in grid]))
    return torch.cat([single, pairs + torch.stack([h.b2 for h in grid])], dim=2)


def _predict(x: torch.Tensor, pair_index: torch.Tensor, grid: Sequence[_Heads]) -> torch.Tensor:
    """Predicted labels of every head: (N, G, S + P)."""
    with torch.no_grad():
        chunks = [_logits(x[i : i + CHUNK], pair_index, grid).argmax(-1) for i in range(0, len(x), CHUNK)]
    heads = len(grid) * (grid[0].w1.shape[0] + grid[0].w2.shape[0])
    return torch.cat(chunks) if chunks else torch.empty(0, len(grid), heads // len(grid), dtype=torch.int64)


def _predict_head(x: torch.Tensor, reads: tuple[int, ...], heads: _Heads, pair: int) -> torch.Tensor:
    """Predicted labels (N,) of ONE head: only selected heads ever see the test split."""
    with torch.no_grad():
        if len(reads) == 1:
            logits = x[:, reads[0]] @ heads.w1[reads[0]] + heads.b1[reads[0]]
        else:
            logits = torch.einsum("nkd,kdc->nc", x[:, list(reads)], heads.w2[pair]) + heads.b2[pair]
    return logits.argmax(-1)


Batches = Callable[[int, int], Iterator[tuple[torch.Tensor, torch.Tensor]]]  # (epoch, first step) -> (x, y) batches


def _fit(
    batches_of: Batches,
    n: int,
    pair_index: torch.Tensor,
    grid: Sequence[_Heads],
    optimizer: torch.optim.Optimizer,
    config: LinearProbeConfig,
    checkpoint: Checkpointing | None,
    on_epoch: Callable[[int], None] | None,
) -> None:
    """Train every head; resumable from ``checkpoint`` (heads, optimizer, schedule, data position)."""
    classes = grid[0].w1.shape[-1]
    batches = math.ceil(n / config.batch_size)
    schedule = warmup_cosine_schedule(optimizer, config.epochs, batches, config.warmup_fraction)
    params = [p for heads in grid for p in (heads.w1, heads.b1, heads.w2, heads.b2)]
    epoch, step = 0, 0
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None:
        with torch.no_grad():
            for param, value in zip(params, saved["heads"]):
                param.copy_(value)
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        epoch, step = saved["epoch"], saved["step"]
    done = epoch * batches + step
    while epoch < config.epochs:
        # batches_of draws an order that depends only on (seed, epoch): with zero init every head
        # trains exactly as it would alone, and a resumed run sees the same batches
        for x, y in batches_of(epoch, step):
            logits = _logits(x, pair_index, grid)
            heads = logits.shape[1] * logits.shape[2]
            loss = F.cross_entropy(logits.reshape(-1, classes), y.repeat_interleave(heads), reduction="sum")
            optimizer.zero_grad(set_to_none=True)
            (loss / len(y)).backward()
            if config.grad_clip is not None:
                for heads in grid:
                    heads.clip(config.grad_clip)
            optimizer.step()
            schedule.step()
            step, done = step + 1, done + 1
            if step == batches:
                epoch, step = epoch + 1, 0
            if checkpoint is not None and checkpoint.due(done):
                state = {"heads": [p.detach().clone() for p in params], "optimizer": optimizer.state_dict()}
                checkpoint.save({**state, "schedule": schedule.state_dict(), "epoch": epoch, "step": step})
        if n == 0:
            epoch += 1
        if on_epoch is not None:
            on_epoch(epoch)


def train_linear_probes(
    train: PooledFeatures,
    val: PooledFeatures,
    test: PooledFeatures,
    sources: Sequence[ProbeSource],
    num_classes: int,
    config: LinearProbeConfig,
    seed: int,
    metric: str = "top1",
    secondary: Sequence[str] = (),
    device: torch.device | str = "cpu",
    on_epoch: Callable[[int], None] | None = None,
    checkpoint: Checkpointing | None = None,
    online: Batches | None = None,
) -> ProbeResult:
    """Train and select every head. ``train`` holds the eval-crop train features; in online mode
    (``online`` yields raw (x, y) training batches of augmented views for (epoch, first step))
    they only provide the standardisation statistics, so training and evaluation share one."""
    device = torch.device(device)
    mean, std = (t.to(device) for t in _statistics(train.features))
    x_train, x_val, x_test = ((t - mean) / std for t in (train.features.to(device), val.features.to(device), test.features.to(device)))
    y_train = train.labels.to(device)
    n, s, d = x_train.shape
    columns = head_inputs(sources)
    singles = [c for c in columns if len(c[2]) == 1]
    pair_index = torch.tensor([c[2] for c in columns if len(c[2]) == 2], dtype=torch.long, device=device).reshape(-1, 2)
    assert [c[2][0] for c in singles] == list(range(s)), "every source is read by exactly one single head"

    points = grid_points(config)
    grid = [_Heads(s, len(pair_index), d, num_classes, device) for _ in points]
    optimizer = grid_optimizer(config, [heads.by_name() for heads in grid])

    def cached_batches(epoch: int, step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = epoch_order(n, seed, epoch).to(device)
        for start in range(step * config.batch_size, n, config.batch_size):
            idx = order[start : start + config.batch_size]
            yield x_train[idx], y_train[idx]

    def online_batches(epoch: int, step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in online(epoch, step):
            yield (x.to(device) - mean) / std, y.to(device)

    _fit(cached_batches if online is None else online_batches, n, pair_index, grid, optimizer, config, checkpoint, on_epoch)

    # logits column of each head: singles at their source index, pairs after all singles
    pair_number = iter(range(s, s + len(pair_index)))
    column_at = [c[2][0] if len(c[2]) == 1 else next(pair_number) for c in columns]
    grid_order = [(j, g) for j in range(len(columns)) for g in range(len(points))]  # set, token, then lr x wd
    val_pred = _predict(x_val, pair_index, grid)  # (N, G, S + P)
    rows = torch.stack([val_pred[:, g, column_at[j]] for j, g in grid_order])
    val_scores = score_predictions(rows, val.labels, metric, num_classes)
    heads_out = [
        HeadScore(columns[j][0].name, columns[j][1], {"lr": points[g][0], "weight_decay": points[g][1]}, float(val_scores[i]))
        for i, (j, g) in enumerate(grid_order)
    ]
    sets = list(dict.fromkeys(c[0] for c in columns))
    layers = []
    for layer_set, chosen in zip(sets, select_per_set(heads_out, sets)):
        j, g = grid_order[chosen]
        predictions = _predict_head(x_test, columns[j][2], grid[g], column_at[j] - s)
        test_score = score_predictions(predictions[None], test.labels, metric, num_classes)
        extra = secondary_scores(predictions[None], test.labels, secondary, num_classes)[0]
        head = heads_out[chosen]
        layers.append(LayerResult(layer_set.name, layer_set.blocks, head.token, head.hparams, head.val_score, float(test_score[0]), extra))
    return summarise(heads_out, layers)
