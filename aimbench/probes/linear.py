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

import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from aimbench.probes.checkpoint import Checkpointing
from aimbench.probes.config import LinearProbeConfig, grid_points
from aimbench.probes.features import PooledFeatures, ProbeSource, head_inputs
from aimbench.probes.halving import rung_steps, survivors
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
    """The still-training heads of one (lr, wd) grid point: ``columns`` (indices into the probe's
    head columns) in logits order, single-source heads first, then concatenated ones."""

    def __init__(self, columns: Sequence[int], layout: _Layout, dim: int, classes: int, device: torch.device) -> None:
        self.columns = [j for j in columns if j in layout.source] + [j for j in columns if j in layout.pair]
        self.singles = torch.tensor([layout.source[j] for j in self.columns if j in layout.source], dtype=torch.long, device=device)
        self.pairs = torch.tensor([layout.pair[j] for j in self.columns if j in layout.pair], dtype=torch.long, device=device)
        # the single-source heads read every source in order: the features go in as they are, no gather
        self.reads_every_source = self.singles.tolist() == list(range(len(layout.source)))
        self.w1 = torch.nn.Parameter(torch.zeros(len(self.singles), dim, classes, device=device))
        self.b1 = torch.nn.Parameter(torch.zeros(len(self.singles), classes, device=device))
        self.w2 = torch.nn.Parameter(torch.zeros(len(self.pairs), 2, dim, classes, device=device))
        self.b2 = torch.nn.Parameter(torch.zeros(len(self.pairs), classes, device=device))

    def params(self) -> list[torch.nn.Parameter]:
        return [self.w1, self.b1, self.w2, self.b2]

    def by_name(self) -> dict[str, list[torch.nn.Parameter]]:
        """The parameters under the names a protocol's ``no_weight_decay`` uses."""
        return {"weight": [self.w1, self.w2], "bias": [self.b1, self.b2]}

    def clip(self, max_norm: float) -> None:
        """Clip the gradient of every head at this grid point to ``max_norm``, each on its own."""
        clip_per_head([self.w1, self.b1], max_norm)
        clip_per_head([self.w2, self.b2], max_norm)

    def logits(self, x: torch.Tensor, pair_index: torch.Tensor) -> torch.Tensor:
        """(B, S, D) features -> (B, heads, C) logits of this grid point's heads."""
        single = torch.einsum("bsd,sdc->bsc", x[:, self.singles], self.w1) + self.b1
        if not len(self.pairs):
            return single
        pairs = torch.einsum("bpkd,pkdc->bpc", x[:, pair_index[self.pairs]], self.w2) + self.b2
        return torch.cat([single, pairs], dim=1)

    def head_masks(self, keep: set[int]) -> dict[int, torch.Tensor]:
        """Per parameter (by id): which of its heads (first axis) stay when only columns ``keep`` do."""
        singles = torch.tensor([j in keep for j in self.columns[: len(self.singles)]], dtype=torch.bool)
        pairs = torch.tensor([j in keep for j in self.columns[len(self.singles) :]], dtype=torch.bool)
        return {id(self.w1): singles, id(self.b1): singles, id(self.w2): pairs, id(self.b2): pairs}


@dataclass(frozen=True)
class _Layout:
    """Where each head column reads: a single source (its index) or a pair (its number in ``pair_index``)."""

    source: dict[int, int]
    pair: dict[int, int]


class _Grid:
    """Every still-training head, its optimizer and schedule; successive halving shrinks it in place."""

    def __init__(self, config: LinearProbeConfig, layout: _Layout, active: Sequence[Sequence[int]], shape: tuple[int, int], n: int,
                 device: torch.device) -> None:  # fmt: skip
        self.config, self.layout, self.shape, self.n, self.device = config, layout, shape, n, device
        self.batches = math.ceil(n / config.batch_size)
        self.heads = [_Heads(columns, layout, *shape, device) for columns in active]
        self.optimizer = grid_optimizer(config, [heads.by_name() for heads in self.heads])
        self.schedule = warmup_cosine_schedule(self.optimizer, config.epochs, self.batches, config.warmup_fraction)

    def params(self) -> list[torch.nn.Parameter]:
        return [p for heads in self.heads for p in heads.params()]

    def order(self) -> list[tuple[int, int]]:
        """(column, grid point) of every head, in logits order."""
        return [(j, g) for g, heads in enumerate(self.heads) for j in heads.columns]

    def logits(self, x: torch.Tensor, pair_index: torch.Tensor) -> torch.Tensor:
        """(B, S, D) features -> (B, heads, C) logits in :meth:`order`. While every grid point trains
        the same columns (always, for the full grid) all points run as one stacked product, reading
        the features in place; after halving has thinned them unevenly, point by point."""
        first = self.heads[0]
        if any(heads.columns != first.columns for heads in self.heads):
            return torch.cat([heads.logits(x, pair_index) for heads in self.heads], dim=1)
        features = x if first.reads_every_source else x[:, first.singles]
        stacked = torch.einsum("bsd,gsdc->bgsc", features, torch.stack([h.w1 for h in self.heads]))
        stacked = stacked + torch.stack([h.b1 for h in self.heads])
        if len(first.pairs):
            pairs = torch.einsum("bpkd,gpkdc->bgpc", x[:, pair_index[first.pairs]], torch.stack([h.w2 for h in self.heads]))
            stacked = torch.cat([stacked, pairs + torch.stack([h.b2 for h in self.heads])], dim=2)
        return stacked.reshape(len(x), -1, stacked.shape[-1])

    def state(self) -> dict[str, Any]:
        return {"heads": [p.detach().clone() for p in self.params()], "active": [heads.columns for heads in self.heads],
                "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict()}  # fmt: skip

    def load(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (as :meth:`state` wrote it): the heads still training then, their optimizer and schedule."""
        fresh = _Grid(self.config, self.layout, state["active"], self.shape, self.n, self.device)
        self.heads, self.optimizer, self.schedule = fresh.heads, fresh.optimizer, fresh.schedule
        with torch.no_grad():
            for param, value in zip(self.params(), state["heads"], strict=True):
                param.copy_(value)
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])

    def keep(self, kept: set[tuple[int, int]]) -> None:
        """Stop every head not in ``kept`` (column, grid point): its weights and optimizer moments are dropped."""
        masks: dict[int, torch.Tensor] = {}
        for g, heads in enumerate(self.heads):
            masks.update(heads.head_masks({j for j, point in kept if point == g}))
        state = self.state()
        state["heads"] = [value[masks[id(param)].to(value.device)] for param, value in zip(self.params(), state["heads"])]
        state["active"] = [[j for j in heads.columns if (j, g) in kept] for g, heads in enumerate(self.heads)]
        live = [p for group in self.optimizer.param_groups for p in group["params"]]
        for index, param in enumerate(live):  # state_dict numbers parameters in group order
            moments = state["optimizer"]["state"].get(index, {})
            for name in ("exp_avg", "exp_avg_sq"):
                if name in moments:
                    moments[name] = moments[name][masks[id(param)].to(moments[name].device)]
        self.load(state)


def _predict(x: torch.Tensor, pair_index: torch.Tensor, grid: _Grid) -> torch.Tensor:
    """Predicted labels of every still-training head: (N, heads) in :meth:`_Grid.order`."""
    with torch.no_grad():
        chunks = [grid.logits(x[i : i + CHUNK], pair_index).argmax(-1) for i in range(0, len(x), CHUNK)]
    return torch.cat(chunks) if chunks else torch.empty(0, len(grid.order()), dtype=torch.int64)


def _val_losses(x: torch.Tensor, labels: torch.Tensor, pair_index: torch.Tensor, grid: _Grid) -> torch.Tensor:
    """Mean cross-entropy on ``x`` of every still-training head: (heads,) in :meth:`_Grid.order`, in row
    chunks small enough that the logits of all heads stay within ~1 GB."""
    labels = labels.to(x.device)
    heads, classes = len(grid.order()), grid.shape[1]
    rows = max(1, 2**28 // max(heads * classes, 1))
    total = torch.zeros(heads, dtype=torch.float64, device=x.device)
    with torch.no_grad():
        for i in range(0, len(x), rows):
            logits = grid.logits(x[i : i + rows], pair_index)  # (B, heads, C)
            y = labels[i : i + rows]
            losses = F.cross_entropy(logits.reshape(-1, classes), y.repeat_interleave(heads), reduction="none")
            total += losses.reshape(len(y), heads).sum(dim=0).double()
    return total / max(len(x), 1)


def _predict_head(x: torch.Tensor, reads: tuple[int, ...], heads: _Heads, index: int) -> torch.Tensor:
    """Predicted labels (N,) of ONE head (``index`` in its grid point's logits order): only selected heads ever see the test split."""
    with torch.no_grad():
        if len(reads) == 1:
            logits = x[:, reads[0]] @ heads.w1[index] + heads.b1[index]
        else:
            pair = index - len(heads.singles)
            logits = torch.einsum("nkd,kdc->nc", x[:, list(reads)], heads.w2[pair]) + heads.b2[pair]
    return logits.argmax(-1)


Batches = Callable[[int, int], Iterator[tuple[torch.Tensor, torch.Tensor]]]  # (epoch, first step) -> (x, y) batches


@dataclass
class _Halving:
    """What successive halving needs at a rung: val features and labels, each head's (layer set, token, lr, wd), and what it stopped."""

    x_val: torch.Tensor
    y_val: torch.Tensor
    pair_index: torch.Tensor
    describe: Callable[[int, int, float], HeadScore]  # (column, grid point), val score -> the head's score record
    metric: str
    num_classes: int
    stopped: dict[tuple[int, int], HeadScore]  # (column, grid point) -> its score where it stopped

    def rung(self, grid: _Grid, fraction: float) -> None:
        """Keep each layer set's better half by val loss (continuous, unlike an early accuracy full of
        ties, and what the heads minimise); record the stopped ones with their val score."""
        order = grid.order()
        losses = _val_losses(self.x_val, self.y_val, self.pair_index, grid).tolist()
        scores = score_predictions(_predict(self.x_val, self.pair_index, grid).T, self.y_val, self.metric, self.num_classes).tolist()
        sets: dict[str, list[int]] = {}
        for index in sorted(range(len(order)), key=order.__getitem__):  # grid order: set, token, lr x wd
            sets.setdefault(self.describe(*order[index], 0.0).layer_set, []).append(index)
        kept = survivors(list(sets.values()), [-loss for loss in losses])
        for index in set(range(len(order))) - kept:
            self.stopped[order[index]] = dataclasses.replace(self.describe(*order[index], scores[index]), stopped_at=round(fraction, 6))
        grid.keep({order[index] for index in kept})


def _fit(
    batches_of: Batches,
    n: int,
    pair_index: torch.Tensor,
    grid: _Grid,
    config: LinearProbeConfig,
    checkpoint: Checkpointing | None,
    on_epoch: Callable[[int], None] | None,
    halving: _Halving | None,
) -> None:
    """Train every head (halving the grid at its rungs); resumable from ``checkpoint`` (heads still
    training, optimizer, schedule, data position, heads stopped so far)."""
    classes = grid.shape[1]
    batches = grid.batches
    rungs = rung_steps(config.epochs * batches) if halving is not None else []
    epoch, step = 0, 0
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None:
        grid.load({"active": [list(grid.heads[0].columns)] * len(grid.heads), **saved})  # states before halving: every head
        epoch, step = saved["epoch"], saved["step"]
        if halving is not None:
            halving.stopped.update({(j, g): HeadScore(**head) for j, g, head in saved.get("stopped", [])})
    done = epoch * batches + step
    while epoch < config.epochs:
        # batches_of draws an order that depends only on (seed, epoch): with zero init every head
        # trains exactly as it would alone, and a resumed run sees the same batches
        for x, y in batches_of(epoch, step):
            logits = grid.logits(x, pair_index)
            loss = F.cross_entropy(logits.reshape(-1, classes), y.repeat_interleave(logits.shape[1]), reduction="sum")
            grid.optimizer.zero_grad(set_to_none=True)
            (loss / len(y)).backward()
            if config.grad_clip is not None:
                for heads in grid.heads:
                    heads.clip(config.grad_clip)
            grid.optimizer.step()
            grid.schedule.step()
            step, done = step + 1, done + 1
            if step == batches:
                epoch, step = epoch + 1, 0
            if done in rungs:
                halving.rung(grid, done / (config.epochs * batches))
            if checkpoint is not None and checkpoint.due(done):
                stopped = [[*head, dataclasses.asdict(score)] for head, score in halving.stopped.items()] if halving is not None else []
                checkpoint.save({**grid.state(), "epoch": epoch, "step": step, "stopped": stopped})
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
    pair_numbers = iter(range(len(pair_index)))
    layout = _Layout({j: c[2][0] for j, c in enumerate(columns) if len(c[2]) == 1},
                     {j: next(pair_numbers) for j, c in enumerate(columns) if len(c[2]) == 2})  # fmt: skip
    grid = _Grid(config, layout, [list(range(len(columns)))] * len(points), (d, num_classes), n, device)

    def describe(j: int, g: int, val_score: float) -> HeadScore:
        return HeadScore(columns[j][0].name, columns[j][1], {"lr": points[g][0], "weight_decay": points[g][1]}, val_score)

    halving = None
    if config.grid_search == "halving":
        halving = _Halving(x_val, val.labels, pair_index, describe, metric, num_classes, {})

    def cached_batches(epoch: int, step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = epoch_order(n, seed, epoch).to(device)
        for start in range(step * config.batch_size, n, config.batch_size):
            idx = order[start : start + config.batch_size]
            yield x_train[idx], y_train[idx]

    def online_batches(epoch: int, step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in online(epoch, step):
            yield (x.to(device) - mean) / std, y.to(device)

    _fit(cached_batches if online is None else online_batches, n, pair_index, grid, config, checkpoint, on_epoch, halving)

    order = grid.order()
    val_scores = score_predictions(_predict(x_val, pair_index, grid).T, val.labels, metric, num_classes).tolist()
    final = {head: describe(*head, float(score)) for head, score in zip(order, val_scores)}
    stopped = halving.stopped if halving is not None else {}
    grid_order = [(j, g) for j in range(len(columns)) for g in range(len(points))]  # set, token, then lr x wd
    heads_out = [final[head] if head in final else stopped[head] for head in grid_order]
    sets = list(dict.fromkeys(c[0] for c in columns))
    layers = []
    for layer_set, chosen in zip(sets, select_per_set(heads_out, sets)):
        j, g = grid_order[chosen]
        heads = grid.heads[g]
        predictions = _predict_head(x_test, columns[j][2], heads, heads.columns.index(j))
        test_score = score_predictions(predictions[None], test.labels, metric, num_classes)
        extra = secondary_scores(predictions[None], test.labels, secondary, num_classes)[0]
        head = heads_out[chosen]
        layers.append(LayerResult(layer_set.name, layer_set.blocks, head.token, head.hparams, head.val_score, float(test_score[0]), extra))
    return summarise(heads_out, layers)
