"""Layer-wise probing: one backbone pass for every (layer x lr) head vs one run per (layer, lr).

Both ways use the same backbone, data, probe code and hyper-parameters; the naive way is what a
harness without multi-head training does (a full extraction and a probe run per layer and lr).
Prints each wall time, the ratio, and checks that both select the same val scores.

    python benchmarks/one_pass_vs_per_layer.py --backbone vit-tiny-cls --task digits --limit 600
"""

from __future__ import annotations

import argparse
import time

import torch

from aimbench.adapters import load_backbone
from aimbench.cards.registry import Registry
from aimbench.data import load_task
from aimbench.probes.config import LinearProbeConfig
from aimbench.probes.features import extract_pooled, feature_sources
from aimbench.probes.linear import train_linear_probes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="vit-tiny-cls")
    parser.add_argument("--task", default="digits")
    parser.add_argument("--limit", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()

    registry = Registry.load()
    task = registry.task(args.task)
    splits = load_task(task, limit=args.limit)
    backbone = load_backbone(args.backbone, registry=registry)
    config = LinearProbeConfig(epochs=args.epochs)
    layers = list(range(backbone.depth))

    def run(layer_set: list[int], probe_config: LinearProbeConfig) -> dict[tuple[int, str, float], float]:
        sources = feature_sources(backbone, layer_set)
        feats = [extract_pooled(backbone, split, layer_set) for split in (splits.train, splits.val, splits.test)]
        result = train_linear_probes(*feats, sources, task.num_classes, probe_config, seed=0)
        return {(h.layer, h.token, h.lr): h.val_top1 for h in result.heads}

    torch.set_num_threads(torch.get_num_threads())
    start = time.perf_counter()
    together = run(layers, config)
    one_pass = time.perf_counter() - start

    start = time.perf_counter()
    separate: dict[tuple[int, str, float], float] = {}
    for layer in layers:
        for lr in config.learning_rates:
            separate.update(run([layer], LinearProbeConfig(learning_rates=(lr,), epochs=args.epochs)))
    naive = time.perf_counter() - start

    runs = len(layers) * len(config.learning_rates)
    print(f"backbone {args.backbone}, task {args.task} (limit {args.limit}), {len(layers)} layers x {len(config.learning_rates)} lrs, {args.epochs} epochs")
    print(f"one pass, all heads together : {one_pass:8.2f} s")
    print(f"one run per (layer, lr) [{runs:3d}] : {naive:8.2f} s")
    print(f"speed-up                     : {naive / one_pass:8.1f}x")
    gap = max(abs(together[k] - separate[k]) for k in together)
    print(f"largest val top-1 difference between the two ways: {gap:.4f} (expected 0: same zero init, same data order)")


if __name__ == "__main__":
    main()
