"""Layer-wise probing: one backbone pass for every (layer x lr x wd) head vs one run per (layer, lr, wd).

Both ways use the same backbone, data, probe code and hyper-parameters; the naive way is what a
harness without multi-head training does (a full extraction and a probe run per layer, lr and wd).
Prints each wall time, the ratio, and checks that both select the same val scores.

    python benchmarks/one_pass_vs_per_layer.py --backbone vit-tiny-cls --task digits --limit 600
"""

from __future__ import annotations

import time

import harness  # benchmarks/harness.py, next to this script
import torch

from aimbench.probes.features.extract import extract_pooled, feature_sources, probe_inputs
from aimbench.probes.features.layer_sets import LayerSet
from aimbench.probes.linear.config import LinearProbeConfig
from aimbench.probes.linear.training import train_linear_probes
from aimbench.probes.protocol import default_config

CACHED_LINEAR = "aim-v1"  # the cached linear recipe timed (the linear default, dinov2-linear, trains online)

Key = tuple[str, str, float, float]


def main() -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    task, splits, backbone = harness.load(args)
    config = default_config("linear", CACHED_LINEAR, epochs=args.epochs)
    layers = list(range(backbone.depth))

    def run(blocks: list[int], probe_config: LinearProbeConfig) -> dict[Key, float]:
        sets = [LayerSet(str(block), (block,)) for block in blocks]
        feats = []
        for split in (splits.train, splits.val, splits.test):
            inputs, sources = probe_inputs(extract_pooled(backbone, split, blocks), feature_sources(backbone, blocks), sets)
            feats.append(inputs)
        result = train_linear_probes(*feats, sources, task.num_classes, probe_config, seed=0)
        return {(h.layer_set, h.token, h.hparams["lr"], h.hparams["weight_decay"]): h.val_score for h in result.heads}

    torch.set_num_threads(torch.get_num_threads())
    start = time.perf_counter()
    together = run(layers, config)
    one_pass = time.perf_counter() - start

    start = time.perf_counter()
    separate: dict[Key, float] = {}
    for layer in layers:
        for lr in config.learning_rates:
            for wd in config.weight_decays:
                single = default_config("linear", CACHED_LINEAR, learning_rates=(lr,), weight_decays=(wd,), epochs=args.epochs)
                separate.update(run([layer], single))
    naive = time.perf_counter() - start

    grid = len(config.learning_rates) * len(config.weight_decays)
    runs = len(layers) * grid
    print(f"backbone {args.backbone}, task {args.task} (limit {args.limit}), {len(layers)} layers x {grid} (lr, wd), {args.epochs} epochs")
    print(f"one pass, all heads together     : {one_pass:8.2f} s")
    print(f"one run per (layer, lr, wd) [{runs:3d}] : {naive:8.2f} s")
    print(f"speed-up                         : {naive / one_pass:8.1f}x")
    gap = max(abs(together[k] - separate[k]) for k in together)
    print(f"largest val score difference between the two ways: {gap:.4f} (expected 0: same zero init, same data order)")


if __name__ == "__main__":
    main()
