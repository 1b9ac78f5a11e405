"""Training AIM attentive probes online: every (layer set x lr x wd) head from one backbone pass.

Each step draws a batch of augmented views, runs the frozen backbone once without autograd for
every block any layer set needs, averages the raw block outputs of each window (``tokens``),
normalises the batch in place (``batch_stats``), and trains
all heads on those tokens with one cross-entropy call over their stacked logits. So the cost per
epoch is one backbone forward per training image, however many layer sets and grid points.

Determinism and resume: the data order of an epoch depends only on (seed, epoch), and the
augmentation of an image only on (seed, epoch, position), so a run restarted from a checkpoint
(heads, optimizer, schedule, BatchNorm statistics, epoch and step) sees exactly the batches an
uninterrupted run would, and ends with the same numbers on CPU. Heads start from an init that
depends only on their own identity (:func:`~aimbench.probes.schedule.head_seed`), so a
head trained in the grid equals the same head trained alone.

Precision: heads train under bf16 autocast on GPU (memory and speed), but val and test are both
scored in fp32 with autocast off, as Apple's ``main_attnprobe.py`` evaluates its heads, so the
selection on val and the number on test come from the same arithmetic.

Selection: val scores for every head; per layer set the best (ties: smaller lr, then wd) is
exported as a standalone ``AttentivePoolingHead`` and only those score the test split.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import replace

import torch
import torch.nn.functional as F

from aimbench.adapters.base import Backbone
from aimbench.data.images import LabelledImages
from aimbench.probes.attentive.batch_stats import batch_moments, normalise_
from aimbench.probes.attentive.config import AttentiveProbeConfig
from aimbench.probes.attentive.grid import AttentiveGrid, SetNorms
from aimbench.probes.attentive.head import AttentivePoolingHead
from aimbench.probes.attentive.tokens import CachedTokens, SetTokens, eval_tokens, forwarded_tokens
from aimbench.probes.checkpoint import Checkpointing
from aimbench.probes.config import grid_points
from aimbench.probes.features.layer_sets import LayerSet
from aimbench.probes.features.rank_batches import rank_loader
from aimbench.probes.features.views import AugmentedViews, train_transform
from aimbench.probes.finite import finite_along, grid_point, require_finite_features, require_finite_heads
from aimbench.probes.metrics import score_predictions, secondary_scores
from aimbench.probes.ownership import Shard
from aimbench.probes.results import HeadScore, LayerResult, ProbeResult, select_per_set, summarise
from aimbench.probes.schedule import clip_per_head, epoch_batches, grid_optimizer, head_seed, warmup_cosine_schedule
from aimbench.probes.sharding import to_owners

TRAIN_AUTOCAST = ("cuda",)  # device types whose head training runs under bf16 autocast; scoring never does


class AttentiveTrainer:
    """The heads, optimizer and schedule of one attentive probe run, and its resumable state."""

    def __init__(
        self, backbone: Backbone, sets: Sequence[LayerSet], num_classes: int, config: AttentiveProbeConfig, seed: int, shard: Shard = Shard()
    ) -> None:  # fmt: skip
        """Heads for this rank's sets of ``sets`` (alone: all of them); every set of ``sets`` is forwarded."""
        self.backbone, self.config, self.seed, self.shard = backbone, config, seed, shard
        self.forwarded = list(sets)
        self.sets = shard.owned(self.forwarded)
        self.points = grid_points(config)
        device, dim = backbone.device, backbone.dim
        self.grids = [
            AttentiveGrid([head_seed(seed, s.name, lr, wd) for s in self.sets], dim, num_classes, backbone.heads).to(device)
            for lr, wd in self.points
        ]
        self.norms = SetNorms(len(self.sets), dim).to(device)
        self.optimizer = grid_optimizer(config, [grid.by_name() for grid in self.grids], betas=config.betas)
        self.epoch, self.step = 0, 0  # the data position: next epoch, next batch within it

    def hparams(self, point: int) -> dict[str, float]:
        """Grid point ``point`` as records and messages name it."""
        return {"lr": self.points[point][0], "weight_decay": self.points[point][1]}

    def head_logits(self, normed: torch.Tensor, autocast: bool) -> torch.Tensor:
        """Normalised (L, B, N, D) tokens -> (G, L, B, C) fp32 logits of every head."""
        with torch.autocast(normed.device.type, dtype=torch.bfloat16, enabled=autocast):
            return torch.stack([grid(normed) for grid in self.grids]).float()

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Eval logits (G, L, B, C) of every head in fp32, the precision the exported heads score test in."""
        with torch.no_grad():
            return self.head_logits(self.norms(tokens), autocast=False)

    def train_step(self, local: SetTokens, labels: torch.Tensor, exchange: Shard | None = None) -> None:
        """One optimizer step of every head on a batch of ``len(labels)`` rows. ``local``: every row
        of this rank's sets (the default, nothing to exchange), or, online on several ranks, this
        rank's rows of every forwarded set, whose owners receive them (``exchange``: the cell's
        shard). The BatchNorm (no affine, nothing to learn) normalises the rows in place with the
        whole batch's moments (``batch_stats``); the heads then run in micro-batches whose
        gradients add up to the full batch's, and their owners receive one micro-batch of tokens
        at a time, so memory follows ``micro_batch``, not ``batch_size``."""
        exchange = exchange or replace(self.shard, rank=0, world=1)
        rows, classes = labels.shape[0], self.grids[0].weight.shape[1]
        with torch.no_grad():
            mean, var, count = batch_moments(local, exchange, rows)
            # a NaN or inf in any row of a set makes its moments so: every rank sees it alike, and none waits on the others
            names = [f"layer set {s.name}" for s in (self.sets if exchange.alone else self.forwarded)]
            require_finite_features(torch.stack([mean, var], dim=1), 0, names, "train")
            normalise_(local, mean, var)
            own = exchange.owned(range(len(local)))
            self.norms.track_(mean[own], var[own], count)
        autocast = self.backbone.device.type in TRAIN_AUTOCAST
        self.optimizer.zero_grad(set_to_none=True)
        for start in range(0, rows, self.config.micro_batch):
            window = range(start, min(start + self.config.micro_batch, rows))
            normed = to_owners(local, exchange, rows, window=window)  # (L_own, m, N, D)
            if autocast:  # what autocast casts them to for every grid point's einsums: cast once, kept once for backward
                normed = normed.to(torch.bfloat16)
            logits = self.head_logits(normed, autocast)  # (G, L_own, m, C)
            targets = labels[window.start : window.stop].repeat(logits.shape[0] * logits.shape[1])
            (F.cross_entropy(logits.reshape(-1, classes), targets, reduction="sum") / rows).backward()
            del normed, logits  # before the next window is received: one window at a time
        if self.config.grad_clip is not None:  # per head: a grid point's tensors stack its layer sets' heads
            for grid in self.grids:
                clip_per_head([t for tensors in grid.by_name().values() for t in tensors], self.config.grad_clip)
        self.optimizer.step()

    def state(self, scheduler: torch.optim.lr_scheduler.LambdaLR) -> dict:
        return {
            "epoch": self.epoch, "step": self.step,
            "grids": [g.state_dict() for g in self.grids], "norms": self.norms.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        }  # fmt: skip

    def restore(self, state: dict, scheduler: torch.optim.lr_scheduler.LambdaLR) -> None:
        for grid, saved in zip(self.grids, state["grids"]):
            grid.load_state_dict(saved)
        self.norms.load_state_dict(state["norms"])
        self.optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.step = state["epoch"], state["step"]


def _predict_all(
    trainer: AttentiveTrainer, images: LabelledImages, batch_size: int, workers: int, cached: CachedTokens | None
) -> torch.Tensor:
    """Eval-crop predictions of every head: (G, L, N)."""
    chunks = []
    names = [s.name for s in trainer.sets]
    with torch.no_grad():
        for tokens in eval_tokens(trainer.backbone, images, trainer.forwarded, batch_size, workers, cached, trainer.shard):
            require_finite_features(tokens, 0, [f"layer set {name}" for name in names], "val")
            logits = trainer.logits(tokens)  # (G, L, B, C)
            finite = finite_along(logits.flatten(0, 1), 0)  # grid point g, layer set s at g * L + s
            require_finite_heads(
                finite, lambda i: grid_point(names[i % len(names)], "attentive", trainer.hparams(i // len(names))), "val logits"
            )
            chunks.append(logits.argmax(-1).cpu())
    return torch.cat(chunks, dim=2) if chunks else torch.empty(len(trainer.grids), len(trainer.sets), 0, dtype=torch.int64)


def head_predictions(
    backbone: Backbone,
    heads: Sequence[AttentivePoolingHead],
    sets: Sequence[LayerSet],
    images: LabelledImages,
    batch_size: int = 64,
    workers: int = 0,
    on_batch: Callable[[int], None] | None = None,
    cached: CachedTokens | None = None,
    split: str = "test",
    shard: Shard = Shard(),
) -> torch.Tensor:
    """Eval-crop predictions (H, N) of standalone heads, head i reading this rank's layer set i of
    ``sets`` (alone: set i); one backbone forward per batch (or the cache) serves them all. Selected
    and released heads are scored this way."""
    heads = [head.to(backbone.device).eval() for head in heads]
    owned = shard.owned(sets)
    chunks = []
    with torch.no_grad():
        for tokens in eval_tokens(backbone, images, sets, batch_size, workers, cached, shard):
            require_finite_features(tokens, 0, [f"layer set {s.name}" for s in owned], split)
            logits = [head(tokens[i].to(head.cls_token.dtype)) for i, head in enumerate(heads)]
            require_finite_heads([bool(torch.isfinite(x).all()) for x in logits], lambda i: f"layer set {owned[i].name}", f"{split} logits")
            chunks.append(torch.stack([x.argmax(-1).cpu() for x in logits]))
            if on_batch is not None:
                on_batch(tokens.shape[1])
    return torch.cat(chunks, dim=1) if chunks else torch.empty(len(heads), 0, dtype=torch.int64)


def fit(
    trainer: AttentiveTrainer,
    train: LabelledImages,
    checkpoint: Checkpointing | None = None,
    workers: int = 0,
    on_step: Callable[[int], None] | None = None,
    cached: CachedTokens | None = None,
) -> None:
    """Train every head for the configured epochs, resuming from the checkpoint when it holds
    this run's state, and saving to it as it goes. Online (augmented views through the backbone)
    unless ``cached`` token maps of the train split are given."""
    config, seed, backbone = trainer.config, trainer.seed, trainer.backbone
    batches_per_epoch = math.ceil(len(train) / config.batch_size)
    scheduler = warmup_cosine_schedule(trainer.optimizer, config.epochs, batches_per_epoch, config.warmup_fraction, config.min_lr)
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None:
        trainer.restore(saved, scheduler)
    if cached is None:
        transform = train_transform(backbone.preprocess, config.augmentation, config.min_crop_scale, config.views)
        views = AugmentedViews(train, transform, seed)
    done = trainer.epoch * batches_per_epoch + trainer.step
    trainer.norms.train()
    total = config.epochs * batches_per_epoch
    with checkpoint.training() if checkpoint is not None else nullcontext():
        while trainer.epoch < config.epochs:
            batches = epoch_batches(len(train), config.batch_size, seed, trainer.epoch)[trainer.step :]
            steps: Iterator[tuple[SetTokens, Sequence[int], Shard | None]]
            if cached is not None:  # every row of this rank's sets
                steps = ((cached.set_tokens(idx, trainer.sets, backbone.device), idx, None) for idx in batches)
            else:  # this rank's rows of each batch forwarded in chunks, for every set; the owners receive them in train_step
                views.epoch = trainer.epoch
                steps = ((forwarded_tokens(backbone, images, trainer.forwarded, trainer.shard.chunk), idx, trainer.shard)
                         for idx, images in rank_loader(views, batches, trainer.shard, workers))  # fmt: skip
            for tokens, idx, exchange in steps:
                trainer.train_step(tokens, torch.as_tensor(train.labels[idx]).to(backbone.device), exchange)
                scheduler.step()
                trainer.step += 1
                done += 1
                if trainer.step == batches_per_epoch:
                    trainer.epoch, trainer.step = trainer.epoch + 1, 0
                if checkpoint is not None:  # saves when due, and before a requested stop
                    checkpoint.after_step(done, total, lambda: trainer.state(scheduler))
                if on_step is not None:
                    on_step(done)
                del tokens  # before the next batch is forwarded: one batch's tokens at a time
            if not batches:  # an empty train split: nothing to learn
                trainer.epoch += 1
    trainer.optimizer.zero_grad(set_to_none=True)  # scoring needs no gradients: their memory goes to the val and test batches
    trainer.norms.eval()


def evaluate(
    trainer: AttentiveTrainer, val: LabelledImages, test: LabelledImages, metric: str, batch_size: int = 64, workers: int = 0,
    cached: tuple[CachedTokens, CachedTokens] | None = None, secondary: Sequence[str] = (),
) -> ProbeResult:  # fmt: skip
    """Val scores for every head; the val-best head of each layer set, alone, scores test."""
    num_classes = trainer.grids[0].weight.shape[1]
    backbone = trainer.backbone
    val_cached, test_cached = cached or (None, None)
    val_pred = _predict_all(trainer, val, batch_size, workers, val_cached)  # (G, L, N)
    order = [(g, s) for s in range(len(trainer.sets)) for g in range(len(trainer.points))]  # set, then lr x wd
    val_scores = score_predictions(torch.stack([val_pred[g, s] for g, s in order]), torch.as_tensor(val.labels), metric, num_classes)
    heads_out = [HeadScore(trainer.sets[s].name, "attentive", trainer.hparams(g), float(score)) for (g, s), score in zip(order, val_scores)]
    chosen = select_per_set(heads_out, trainer.sets)  # one head index per layer set, in set order
    selected = [trainer.grids[order[i][0]].head(s, trainer.norms.norm(s)) for s, i in enumerate(chosen)]
    test_pred = head_predictions(backbone, selected, trainer.forwarded, test, batch_size, workers, cached=test_cached, shard=trainer.shard)
    test_labels = torch.as_tensor(test.labels)
    test_scores = score_predictions(test_pred, test_labels, metric, num_classes)
    extras = secondary_scores(test_pred, test_labels, secondary, num_classes)
    layers = [
        LayerResult.selected(s, heads_out[i], float(score), extra, predicted)
        for s, i, score, extra, predicted in zip(trainer.sets, chosen, test_scores, extras, test_pred)
    ]
    return summarise(heads_out, layers)


def train_attentive_probes(
    backbone: Backbone,
    train: LabelledImages,
    val: LabelledImages,
    test: LabelledImages,
    sets: Sequence[LayerSet],
    num_classes: int,
    config: AttentiveProbeConfig,
    seed: int,
    metric: str = "top1",
    secondary: Sequence[str] = (),
    checkpoint: Checkpointing | None = None,
    eval_batch_size: int = 64,
    workers: int = 0,
    on_step: Callable[[int], None] | None = None,
    cached: tuple[CachedTokens, CachedTokens, CachedTokens] | None = None,
    shard: Shard = Shard(),
) -> ProbeResult:
    """The whole attentive probe: build the grid, :func:`fit` it (resumable), :func:`evaluate` it;
    ``cached`` token maps of (train, val, test) replace the backbone (cached mode); with several
    ranks, this rank's sets of ``sets`` (``shard``), every set forwarded."""
    trainer = AttentiveTrainer(backbone, sets, num_classes, config, seed, shard)
    fit(trainer, train, checkpoint, workers, on_step, cached[0] if cached else None)
    return evaluate(trainer, val, test, metric, eval_batch_size, workers, cached[1:] if cached else None, secondary)
