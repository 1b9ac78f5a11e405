"""What probing every layer with the whole grid costs, next to probing one layer with one head.

Runs side by side in one process, on the same backbone and data:

1. cached mode (linear): (a) one head (last block, patch mean, one lr and wd) vs (b) every block
   with aim-v1's grid (token kinds x 6 lrs x 3 wds), each including its feature extraction
   into a fresh cache;
2. online mode (attentive): (a) one head (last block, one lr and wd) vs (b) every block with the
   default grid (aim-v2's 7 lrs x 2 wds);
3. feature extraction through aimbench (all blocks, pooled) vs the bare model forward on the same
   preprocessed batches.

Prints wall times, the ratios b/a, backbone forwards per training image (per epoch online, in
total cached) and the extraction throughput ratio. Targets from the probe-engine issue: b/a <= 1.3,
exactly one forward per image per epoch (online) or in total (cached), extraction >= 0.95x bare.

    python benchmarks/probe_grid_cost.py --backbone vit-tiny-cls --task digits --limit 600
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import harness  # benchmarks/harness.py, next to this script
import torch

from aimbench.adapters.base import Backbone
from aimbench.cards.backbone_card import PATCH_MEAN
from aimbench.data import TaskSplits
from aimbench.probes.attentive.config import AttentiveProbeConfig
from aimbench.probes.attentive.training import train_attentive_probes
from aimbench.probes.features.cache import Extraction, SplitKey, cached_pooled
from aimbench.probes.features.extract import feature_sources, probe_inputs
from aimbench.probes.features.layer_sets import blocks_needed, parse_layer_sets
from aimbench.probes.linear.config import LinearProbeConfig
from aimbench.probes.linear.training import train_linear_probes
from aimbench.probes.protocol import default_config

CACHED_LINEAR = "aim-v1"  # the cached linear recipe timed (the linear default, dinov2-linear, trains online)


class ForwardCounter:
    """Counts images through ``forward_layers`` of a backbone."""

    def __init__(self, backbone: Backbone) -> None:
        self.images = 0
        original = backbone.forward_layers

        def counting(images: torch.Tensor, layers):  # type: ignore[no-untyped-def]
            self.images += len(images)
            return original(images, layers)

        backbone.forward_layers = counting  # type: ignore[method-assign]


def cached_linear(backbone: Backbone, splits: TaskSplits, classes: int, layers: str, config: LinearProbeConfig, one_head: bool) -> float:
    sets = parse_layer_sets(layers, backbone.depth)
    blocks = blocks_needed(sets)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        inputs = []
        for name, images in (("train", splits.train), ("val", splits.val), ("test", splits.test)):
            pooled, _ = cached_pooled(backbone, images, blocks, SplitKey(name, splits.source, splits.revision), Extraction(Path(cache)))
            split_inputs, sources = probe_inputs(pooled, feature_sources(backbone, blocks), sets)
            inputs.append(split_inputs)
        if one_head:  # keep the patch-mean input only
            keep = [i for i, s in enumerate(sources) if s.token == PATCH_MEAN]
            inputs = [dataclasses.replace(x, features=x.features[:, keep]) for x in inputs]
            sources = [sources[i] for i in keep]
        train_linear_probes(*inputs, sources, classes, config, seed=0)
    return time.perf_counter() - start


def online_attentive(backbone: Backbone, splits: TaskSplits, classes: int, layers: str, config: AttentiveProbeConfig) -> float:
    sets = parse_layer_sets(layers, backbone.depth)
    start = time.perf_counter()
    train_attentive_probes(backbone, splits.train, splits.val, splits.test, sets, classes, config, seed=0)
    return time.perf_counter() - start


def extraction_vs_bare(backbone: Backbone, splits: TaskSplits, batch_size: int, repeats: int = 4) -> tuple[float, float]:
    transform = backbone.transform()
    batches = [torch.stack([transform(splits.train.image(i)) for i in range(s, min(s + batch_size, len(splits.train)))])
               for s in range(0, len(splits.train), batch_size)]  # fmt: skip
    blocks = list(range(backbone.depth))

    def ours() -> None:
        for batch in batches:
            for out in backbone.forward_layers(batch, blocks).values():
                out.patches.mean(dim=1)

    def bare() -> None:
        for batch in batches:
            backbone.model.forward_features(batch)

    best = {ours: float("inf"), bare: float("inf")}
    with torch.inference_mode():
        for repeat in range(repeats):  # alternating order, best of N: both ways see the same machine states
            for way in (ours, bare) if repeat % 2 == 0 else (bare, ours):
                start = time.perf_counter()
                way()
                best[way] = min(best[way], time.perf_counter() - start)
    best_ours, best_bare = best[ours], best[bare]
    images = sum(len(b) for b in batches)
    return images / best_ours, images / best_bare


def main() -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("--linear-epochs", type=int, default=20)
    parser.add_argument("--attentive-epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    task, splits, backbone = harness.load(args)
    counter = ForwardCounter(backbone)
    n_train = len(splits.train)
    print(f"backbone {args.backbone} ({backbone.depth} blocks), task {args.task}, limit {args.limit}: "
          f"train/val/test {n_train}/{len(splits.val)}/{len(splits.test)}, {torch.get_num_threads()} threads")  # fmt: skip

    one = default_config("linear", CACHED_LINEAR, learning_rates=(1e-2,), weight_decays=(1e-4,), epochs=args.linear_epochs)
    grid = default_config("linear", CACHED_LINEAR, epochs=args.linear_epochs)
    counter.images = 0
    a = cached_linear(backbone, splits, task.num_classes, "last", one, one_head=True)
    b_start = counter.images
    b = cached_linear(backbone, splits, task.num_classes, "all", grid, one_head=False)
    forwards = (counter.images - b_start) / (n_train + len(splits.val) + len(splits.test))
    heads = backbone.depth * (len(backbone.spec.probe_tokens) + (len(backbone.spec.probe_tokens) > 1)) * 18
    print(f"cached linear : (a) 1 head, 1 block {a:7.2f} s | (b) {heads} heads, {backbone.depth} blocks {b:7.2f} s | "
          f"b/a {b / a:5.2f} | backbone forwards per image in total (b): {forwards:.2f}")  # fmt: skip

    one_att = default_config(
        "attentive", learning_rates=(1e-3,), weight_decays=(0.1,), epochs=args.attentive_epochs, batch_size=args.batch_size
    )
    grid_att = default_config("attentive", epochs=args.attentive_epochs, batch_size=args.batch_size)
    a = online_attentive(backbone, splits, task.num_classes, "last", one_att)
    b_start = counter.images
    b = online_attentive(backbone, splits, task.num_classes, "all", grid_att)
    train_forwards = counter.images - b_start - len(splits.val) - len(splits.test)  # minus one val and one test pass
    heads = backbone.depth * len(grid_att.learning_rates) * len(grid_att.weight_decays)
    print(f"online attentive : (a) 1 head, 1 block {a:7.2f} s | (b) {heads} heads, {backbone.depth} blocks {b:7.2f} s | "
          f"b/a {b / a:5.2f} | backbone forwards per training image per epoch (b): {train_forwards / (n_train * args.attentive_epochs):.2f}")  # fmt: skip

    ours, bare = extraction_vs_bare(backbone, splits, args.batch_size)
    print(
        f"extraction, all {backbone.depth} blocks pooled: {ours:8.1f} img/s | bare forward_features: {bare:8.1f} img/s | ratio {ours / bare:4.2f}"
    )


if __name__ == "__main__":
    main()
