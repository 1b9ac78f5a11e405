"""Linear probes for every (layer set x token kind x learning rate x weight decay), trained together.

All heads share one pass over the cached features (:class:`~aimbench.probes.linear.heads.LinearHeads`
runs them as a few batched products, one optimizer step for all). Heads start at zero and see the
same seeded data order, and gradient clipping is per head, so a head's result does not depend on
which other heads are trained beside it. Each (lr, wd) pair is its own AdamW parameter group (the
config's ``no_weight_decay`` parameters, ``weight`` or ``bias``, without decay) under the same
warmup + cosine schedule shape; learning rates are scaled linearly from the config's base batch to
the batch used.

Features are standardised with train statistics: the population form of a BatchNorm without
affine parameters. A concatenated head (``patch_mean+cls``) is a linear map on the concatenation
of both poolings, and a BatchNorm on the concatenation normalises each half on its own.

Precision (``head_precision``): under "bf16" the training products run in bf16 while weights,
AdamW state and the loss stay fp32, as mixed-precision training does; every score (rungs, val,
test) is computed in fp32. At ImageNet shape those products are most of the heads' cost, and
bf16 runs them several times faster on GPUs and on CPUs with bf16 units; it moves numbers by
a few tenths of a point on small test sets, so the shipped protocols keep "fp32".

Selection follows :mod:`aimbench.probes.results`: val only, ties to the first in grid order.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F

from aimbench.probes.checkpoint import Checkpointing
from aimbench.probes.config import grid_points
from aimbench.probes.features.extract import PooledFeatures, ProbeSource, head_inputs
from aimbench.probes.features.layer_sets import LayerSet
from aimbench.probes.finite import finite_along, grid_point, require_finite_heads
from aimbench.probes.linear.config import LinearProbeConfig
from aimbench.probes.linear.halving import rung_steps, survivors
from aimbench.probes.linear.heads import LinearHeads
from aimbench.probes.metrics import score_predictions, secondary_scores
from aimbench.probes.results import (
    HeadScore,
    LayerResult,
    ProbeResult,
    select_per_set,
    summarise,
)
from aimbench.probes.schedule import epoch_order, head_seed

CHUNK = 4096  # evaluation batch


def _statistics(train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature train mean and std: the population form of a BatchNorm without affine."""
    mean = train.mean(dim=0, keepdim=True)
    std = train.std(dim=0, keepdim=True).clamp_min(1e-6) if len(train) > 1 else torch.ones_like(mean)
    return mean, std


def _rows(heads: LinearHeads) -> int:
    """Rows per scoring chunk: the logits of every head stay within ~1 GB."""
    return max(1, min(CHUNK, 2**28 // max(len(heads.order()) * heads.shape[1], 1)))


def _predict(
    x: torch.Tensor, labels: torch.Tensor, heads: LinearHeads, names: Callable[[tuple[int, int]], str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted labels (N, heads) and mean cross-entropy (heads,) of every still-training head on
    ``x``, in :meth:`LinearHeads.order`, from one pass of logits; a head whose logits are not
    finite fails the cell (``names``: how the message names a head)."""
    labels = labels.to(x.device)
    order = heads.order()
    count, classes, rows = len(order), heads.shape[1], _rows(heads)
    chunks: list[torch.Tensor] = []
    total = torch.zeros(count, dtype=torch.float64, device=x.device)
    with torch.no_grad():
        for i in range(0, len(x), rows):
            logits = heads.logits(x[i : i + rows])  # (B, heads, C)
            require_finite_heads(finite_along(logits, 1), lambda h: names(order[h]), "val logits")
            y = labels[i : i + rows]
            losses = F.cross_entropy(logits.reshape(-1, classes), y.repeat_interleave(count), reduction="none")
            total += losses.reshape(len(y), count).sum(dim=0).double()
            chunks.append(logits.argmax(-1))
    predictions = torch.cat(chunks) if chunks else torch.empty(0, count, dtype=torch.int64, device=x.device)
    return predictions, total / max(len(x), 1)


def _predict_head(x: torch.Tensor, heads: LinearHeads, head: tuple[int, int], name: str) -> torch.Tensor:
    """Predicted labels (N,) of ONE head (column, grid point): only selected heads ever see the test split."""
    with torch.no_grad():
        logits = heads.head_logits(x, head)
    require_finite_heads([bool(torch.isfinite(logits).all())], lambda _: name, "test logits")
    return logits.argmax(-1)


Batches = Callable[[int, int], Iterator[tuple[torch.Tensor, torch.Tensor]]]  # (epoch, first step) -> (x, y) batches


@dataclass
class _Halving:
    """What successive halving needs at a rung: val features and labels, each head's (layer set, token, lr, wd), and what it stopped."""

    x_val: torch.Tensor
    y_val: torch.Tensor
    describe: Callable[[int, int, float], HeadScore]  # (column, grid point), val score -> the head's score record
    name: Callable[[tuple[int, int]], str]  # (column, grid point) -> how messages name the head
    metric: str
    num_classes: int
    stopped: dict[tuple[int, int], HeadScore]  # (column, grid point) -> its score where it stopped

    def rung(self, heads: LinearHeads, fraction: float) -> LinearHeads:
        """Keep each layer set's better half by val loss (continuous, unlike an early accuracy full of
        ties, and what the heads minimise); record the stopped ones with their val score."""
        order = heads.order()
        predictions, losses = _predict(self.x_val, self.y_val, heads, self.name)
        scores = score_predictions(predictions.T, self.y_val, self.metric, self.num_classes).tolist()
        sets: dict[str, list[int]] = {}
        for index in sorted(range(len(order)), key=order.__getitem__):  # grid order: set, token, lr x wd
            sets.setdefault(self.describe(*order[index], 0.0).layer_set, []).append(index)
        kept = survivors(list(sets.values()), [-loss for loss in losses.tolist()])
        for index in set(range(len(order))) - kept:
            self.stopped[order[index]] = dataclasses.replace(self.describe(*order[index], scores[index]), stopped_at=round(fraction, 6))
        return heads.keep({order[index] for index in kept})


def _state(heads: LinearHeads, epoch: int, step: int, halving: _Halving | None) -> dict:
    """What a resumed run needs: heads still training, optimizer and schedule, data position, heads stopped so far."""
    stopped = [[*head, dataclasses.asdict(score)] for head, score in halving.stopped.items()] if halving is not None else []
    return {**heads.state(), "epoch": epoch, "step": step, "stopped": stopped}


def _fit(
    batches_of: Batches,
    n: int,
    heads: LinearHeads,
    config: LinearProbeConfig,
    checkpoint: Checkpointing | None,
    on_epoch: Callable[[int], None] | None,
    halving: _Halving | None,
) -> LinearHeads:
    """Train every head for the recipe's steps (halving the grid at its rungs) and return those
    trained to the end; resumable from ``checkpoint`` (heads still training, optimizer, schedule,
    data position, heads stopped so far). Data comes in passes over the train split, each in an
    order of its own; an epoch is the card's ``epoch_length`` steps, or one pass."""
    per_pass, per_epoch, total = math.ceil(n / config.batch_size), config.steps_per_epoch(n), config.total_steps(n)
    rungs = rung_steps(total) if halving is not None else []
    data_pass, step = 0, 0  # the data position: the pass over the train split, the batch within it
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None:
        heads = LinearHeads.from_state(config, heads.reads, heads.shape, total, heads.device, saved)
        data_pass, step = saved["epoch"], saved["step"]
        if halving is not None:
            halving.stopped.update({(j, g): HeadScore(**head) for j, g, head in saved.get("stopped", [])})
    done = data_pass * per_pass + step
    with checkpoint.training() if checkpoint is not None else nullcontext():
        while done < total:
            # batches_of draws an order that depends only on (seed, pass): with per-head init every
            # head trains exactly as it would alone, and a resumed run sees the same batches
            for x, y in batches_of(data_pass, step):
                heads.step(x, y)
                del x, y  # not held while the next batch is made
                step, done = step + 1, done + 1
                if step == per_pass:
                    data_pass, step = data_pass + 1, 0
                if halving is not None and done in rungs:  # rungs is empty without halving
                    heads = halving.rung(heads, done / total)
                if checkpoint is not None:  # saves when due, and before a requested stop
                    checkpoint.after_step(done, total, partial(_state, heads, data_pass, step, halving))
                if on_epoch is not None and done % per_epoch == 0:
                    on_epoch(done // per_epoch)
                if done == total:
                    break
    if total == 0 and on_epoch is not None:  # an empty train split: nothing to learn, training is over
        on_epoch(config.epochs)
    return heads


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
    owned: Sequence[LayerSet] | None = None,
) -> ProbeResult:
    """Train and select every head. ``train`` holds the eval-crop train features; in online mode
    (``online`` yields raw (x, y) training batches of augmented views for (epoch, first step))
    they only provide the standardisation statistics, so training and evaluation share one.

    ``owned``: the layer sets whose heads this rank trains (None: all; never none, see
    ``aimbench.probes.ownership``). The statistics come from every source, as alone, then only the
    owned sources are kept, and ``online`` yields only those."""
    device = torch.device(device)
    if config.feature_norm == "batchnorm":
        mean, std = (t.to(device) for t in _statistics(train.features))
    else:  # the features as extracted, as DINOv2's linear heads read them
        mean, std = torch.zeros((), device=device), torch.ones((), device=device)
    keep = [i for i, source in enumerate(sources) if owned is None or source.layer_set in owned]
    if owned is not None:  # this rank's sources only: the statistics were taken over all of them, as alone
        train, val, test = (PooledFeatures(split.features[:, keep], split.labels) for split in (train, val, test))
        mean, std, sources = mean[:, keep] if mean.dim() else mean, std[:, keep] if std.dim() else std, [sources[i] for i in keep]
    x_train, x_val, x_test = ((t - mean) / std for t in (train.features.to(device), val.features.to(device), test.features.to(device)))
    y_train = train.labels.to(device)
    n, s, d = x_train.shape
    columns = head_inputs(sources, config.token_kinds)
    assert all(0 <= i < s for c in columns for i in c[2]), "every head reads sources that exist"

    points = grid_points(config)
    reads = [c[2] for c in columns]
    heads = LinearHeads(config, reads, {j: list(range(len(points))) for j in range(len(columns))}, (d, num_classes),
                        config.total_steps(n), device, init_seeds=[head_seed(seed, f"{columns[j][0].name}/{columns[j][1]}", *points[g])
                        for j in range(len(columns)) for g in range(len(points))])  # fmt: skip

    def describe(j: int, g: int, val_score: float) -> HeadScore:
        return HeadScore(columns[j][0].name, columns[j][1], {"lr": points[g][0], "weight_decay": points[g][1]}, val_score)

    def name(head: tuple[int, int]) -> str:
        score = describe(*head, 0.0)
        return grid_point(score.layer_set, score.token, score.hparams)

    halving = None
    if config.grid_search == "halving":
        halving = _Halving(x_val, val.labels, describe, name, metric, num_classes, {})

    def cached_batches(epoch: int, step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = epoch_order(n, seed, epoch).to(device)
        for start in range(step * config.batch_size, n, config.batch_size):
            idx = order[start : start + config.batch_size]
            yield x_train[idx], y_train[idx]

    def online_batches(epoch: int, step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        assert online is not None  # online_batches is used only when online batches are given
        for x, y in online(epoch, step):
            batch = (x.to(device) - mean) / std, y.to(device)
            del x, y
            yield batch
            del batch  # one batch at a time: let go before the next is forwarded

    heads = _fit(cached_batches if online is None else online_batches, n, heads, config, checkpoint, on_epoch, halving)

    order = heads.order()
    require_finite_heads(
        [all(bool(torch.isfinite(t).all()) for t in heads.head(head)) for head in order], lambda h: name(order[h]), "weights"
    )
    val_scores = score_predictions(_predict(x_val, val.labels, heads, name)[0].T, val.labels, metric, num_classes).tolist()
    final = {head: describe(*head, float(score)) for head, score in zip(order, val_scores)}
    stopped = halving.stopped if halving is not None else {}
    grid_order = [(j, g) for j in range(len(columns)) for g in range(len(points))]  # set, token, then lr x wd
    heads_out = [final[head] if head in final else stopped[head] for head in grid_order]
    sets = list(dict.fromkeys(c[0] for c in columns))
    layers = []
    for layer_set, chosen in zip(sets, select_per_set(heads_out, sets)):
        predictions = _predict_head(x_test, heads, grid_order[chosen], name(grid_order[chosen]))
        test_score = score_predictions(predictions[None], test.labels, metric, num_classes)
        extra = secondary_scores(predictions[None], test.labels, secondary, num_classes)[0]
        head = heads_out[chosen]
        layers.append(LayerResult.selected(layer_set, head, float(test_score[0]), extra, predictions))
    return summarise(heads_out, layers)
