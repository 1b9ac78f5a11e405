"""How much successive halving loses against the full linear grid, by the size of the val split.

Halving ranks each layer set's heads by val loss at fixed points of the schedule and stops the
worse half (``aimbench/probes/linear/halving.py``). If its losses came from a noisy ranking on small
val splits, a rule "halving where val has at least K examples" would make it safe where it matters
(ImageNet's 12,812 val images). This script measures whether they do.

One full-grid run per feature family and seed (Fashion-MNIST: ``--train`` training images, a val
pool of ``--pool`` images the heads never train on, the 10,000 official test images; the linear
protocol's grid and schedule) records, at every rung and at the end, each head's loss and
prediction on every pool image, and each head's test score. A head's trajectory does not depend on
the other heads nor on val (zero init, the same seeded batches, per-head clipping), so what halving
would select on any val subset of the pool follows exactly from those records: for every val size
``--draws`` random subsets are drawn, and for each layer set the test score of the head halving
selects is compared with the full grid's selection on the same subset. One real halving run on one
subset checks the replay (the same selected head and test score for every layer set).

Feature families: random-init vit-tiny-cls and vit-tiny-reg (every block; patch mean, cls and
their concatenation where the card has them), and pixel features (raw pixels, a random ReLU
projection, pixels under Gaussian noise).

    python benchmarks/halving_val_size.py                 # CPU: about 15 minutes
    python benchmarks/halving_val_size.py --seeds 0 --draws 10 --sizes 500,2000   # a quick look
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from aimbench.adapters import load_backbone
from aimbench.cards.registry import Registry
from aimbench.data import load_task
from aimbench.data.images import LabelledImages
from aimbench.probes.config import grid_points
from aimbench.probes.features.extract import PooledFeatures, ProbeSource, extract_pooled, feature_sources, head_inputs, probe_inputs
from aimbench.probes.features.layer_sets import LayerSet, parse_layer_sets
from aimbench.probes.linear import training
from aimbench.probes.linear.halving import survivors
from aimbench.probes.linear.heads import LinearHeads
from aimbench.probes.metrics import score_predictions
from aimbench.probes.protocol import default_config

TOLERANCE = 0.3  # points: a difference numbers may not carry (the project's tolerance for a changed path)


@dataclass
class Family:
    """A feature family's splits: train, the val pool, test, and its probe sources."""

    name: str
    train: PooledFeatures
    pool: PooledFeatures
    test: PooledFeatures
    sources: list[ProbeSource]


@dataclass
class Recording:
    """What one full-grid run lets a replay select from: per head (in grid order), its pool losses
    at every rung, its pool correctness at the end and its test score; grid order's layer set of each head."""

    rung_losses: list[np.ndarray]  # per rung: (pool, heads) cross-entropy
    final_correct: np.ndarray  # (pool, heads) bool
    test_scores: np.ndarray  # (heads,) in points
    head_sets: list[str]


def _take(features: PooledFeatures, positions: np.ndarray) -> PooledFeatures:
    index = torch.as_tensor(positions)
    return PooledFeatures(features.features[index], features.labels[index])


def _pixels(images: LabelledImages) -> torch.Tensor:
    return torch.tensor(np.stack([np.asarray(images.image(i), dtype=np.float32).reshape(-1) for i in range(len(images))]) / 255.0)


def _backbone_family(name: str, splits: dict[str, LabelledImages]) -> Family:
    backbone = load_backbone(name, weights="random")
    layers = list(range(backbone.depth))
    sets = parse_layer_sets("all", backbone.depth)
    extracted = {split: extract_pooled(backbone, images, layers, batch_size=256) for split, images in splits.items()}
    inputs = {split: probe_inputs(pooled, feature_sources(backbone, layers), sets) for split, pooled in extracted.items()}
    return Family(name, inputs["train"][0], inputs["pool"][0], inputs["test"][0], inputs["train"][1])


def _pixel_family(splits: dict[str, LabelledImages], seed: int) -> Family:
    generator = torch.Generator().manual_seed(seed)
    pixels = {split: _pixels(images) for split, images in splits.items()}
    width = next(iter(pixels.values())).shape[1]
    projection = torch.randn(width, width, generator=generator) / width**0.5
    noise = {split: torch.randn(x.shape, generator=generator) for split, x in pixels.items()}
    kinds = {
        "pixels": lambda x, s: x,
        "relu-projection": lambda x, s: torch.relu(x @ projection),
        "noisy-pixels": lambda x, s: x + noise[s],
    }
    features = {
        split: PooledFeatures(torch.stack([make(x, split) for make in kinds.values()], dim=1), torch.as_tensor(splits[split].labels))
        for split, x in pixels.items()
    }
    sources = [ProbeSource(LayerSet(name, (i,)), "patch_mean") for i, name in enumerate(kinds)]
    return Family("pixels", features["train"], features["pool"], features["test"], sources)


def record_full_grid(family: Family, seed: int, protocol: str, epochs: int) -> Recording:
    """Train the full grid once with halving's rungs observed but no head stopped; record the replay's inputs."""
    config = default_config("linear", protocol, grid_search="halving", epochs=epochs)
    rung_losses: list[np.ndarray] = []
    final: list[LinearHeads] = []
    labels = family.pool.labels

    def observe(self: training._Halving, heads: LinearHeads, fraction: float) -> LinearHeads:
        with torch.no_grad():
            logits = heads.logits(self.x_val)  # (pool, heads, C), heads in order()
            losses = F.cross_entropy(logits.permute(0, 2, 1), labels[:, None].expand(-1, logits.shape[1]), reduction="none")
        rung_losses.append(_in_grid_order(heads, losses.numpy()))
        return heads

    fit = training._fit

    def keep_heads(*args: object, **kwargs: object) -> LinearHeads:
        heads = fit(*args, **kwargs)  # type: ignore[arg-type]
        final.append(heads)
        return heads

    rung = training._Halving.rung
    training._Halving.rung, training._fit = observe, keep_heads  # type: ignore[method-assign, assignment]
    try:
        training.train_linear_probes(family.train, family.pool, family.test, family.sources, 10, config, seed=seed)
    finally:
        training._Halving.rung, training._fit = rung, fit  # type: ignore[method-assign, assignment]
    heads = final[0]
    mean, std = training._statistics(family.train.features)  # as train_linear_probes standardises
    if config.feature_norm == "none":  # the features as extracted, as train_linear_probes reads them then
        mean, std = torch.zeros(()), torch.ones(())
    with torch.no_grad():
        pool_pred = heads.logits((family.pool.features - mean) / std).argmax(-1)
        test_pred = heads.logits((family.test.features - mean) / std).argmax(-1)
    correct = _in_grid_order(heads, (pool_pred == labels[:, None]).numpy())
    test = 100 * score_predictions(torch.as_tensor(_in_grid_order(heads, test_pred.numpy())).T, family.test.labels, "top1", 10).numpy()
    points = len(grid_points(config))
    sets = [column[0].name for column in head_inputs(family.sources) for _ in range(points)]
    return Recording(rung_losses, correct, test, sets)


def _in_grid_order(heads: LinearHeads, values: np.ndarray) -> np.ndarray:
    """Columns of ``values`` (one per head, in ``heads.order()``) rearranged to grid order (column, point)."""
    order = heads.order()
    return values[:, sorted(range(len(order)), key=order.__getitem__)]


def replay(recording: Recording, subset: np.ndarray) -> dict[str, tuple[float, float]]:
    """Per layer set: (full grid's selected test score, halving's), both selected on ``subset`` of the pool."""
    groups: dict[str, list[int]] = {}
    for index, name in enumerate(recording.head_sets):
        groups.setdefault(name, []).append(index)
    accuracy = recording.final_correct[subset].mean(axis=0)
    alive = [list(group) for group in groups.values()]
    for losses in recording.rung_losses:
        scores = (-losses[subset].astype(np.float64).mean(axis=0)).tolist()
        kept = survivors(alive, scores)
        alive = [[index for index in group if index in kept] for group in alive]
    chosen = {}
    for (name, group), left in zip(groups.items(), alive):
        full = max(group, key=lambda index: (accuracy[index], -index))  # ties to the first in grid order
        halved = max(left, key=lambda index: (accuracy[index], -index))
        chosen[name] = (float(recording.test_scores[full]), float(recording.test_scores[halved]))
    return chosen


def check_replay(family: Family, recording: Recording, subset: np.ndarray, seed: int, protocol: str, epochs: int) -> bool:
    """A real halving run on ``subset`` selects what the replay selects, with the same test scores."""
    config = default_config("linear", protocol, grid_search="halving", epochs=epochs)
    result = training.train_linear_probes(family.train, _take(family.pool, subset), family.test, family.sources, 10, config, seed=seed)
    real = {layer.layer_set: 100 * layer.test_score for layer in result.layers}
    replayed = {name: halved for name, (_, halved) in replay(recording, subset).items()}
    return real.keys() == replayed.keys() and all(abs(real[name] - replayed[name]) < 1e-6 for name in real)


def _summary(losses: list[float]) -> str:
    values = np.array(losses)
    return (f"{values.mean():6.3f} {np.percentile(values, 95):6.2f} {values.max():6.2f} "
            f"{100 * (values > TOLERANCE).mean():7.1f}% {100 * (values != 0).mean():7.1f}%")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=20_000, help="training images (of Fashion-MNIST's train split)")
    parser.add_argument("--pool", type=int, default=16_000, help="val pool: the task's val split plus unused train images")
    parser.add_argument("--sizes", default="100,250,500,1000,2000,4000,8000", help="val sizes to replay")
    parser.add_argument("--draws", type=int, default=50, help="random val subsets per size")
    parser.add_argument("--seeds", default="0,1", help="training seeds (data order)")
    parser.add_argument("--protocol", default="aim-v1", help="the linear recipe whose grid and schedule halving is measured on")
    parser.add_argument("--epochs", type=int, default=0, help="linear epochs [default: the protocol's]")
    parser.add_argument("--families", default="vit-tiny-cls,vit-tiny-reg,pixels")
    args = parser.parse_args()
    epochs = args.epochs or default_config("linear", args.protocol).epochs
    torch.manual_seed(0)

    task = load_task(Registry.load().task("fashion-mnist"))
    rng = np.random.default_rng(0)
    order = rng.permutation(len(task.train))
    spare = task.train.subset(np.sort(order[args.train : args.train + args.pool - len(task.val)]))
    pool = LabelledImages(
        lambda i: task.val.image(i) if i < len(task.val) else spare.image(i - len(task.val)),
        np.concatenate([task.val.labels, spare.labels]),
        np.arange(len(task.val) + len(spare)),
    )
    splits = {"train": task.train.subset(np.sort(order[: args.train])), "pool": pool, "test": task.test}
    print(f"Fashion-MNIST: {len(splits['train'])} train, val pool {len(pool)}, {len(task.test)} test; linear protocol grid "
          f"({args.protocol}, {len(grid_points(default_config('linear', args.protocol)))} points), {epochs} epochs; {args.draws} val draws per size")  # fmt: skip

    makers: dict[str, Callable[[], Family]] = {
        "pixels": lambda: _pixel_family(splits, seed=0),
        **{name: (lambda name=name: _backbone_family(name, splits)) for name in ("vit-tiny-cls", "vit-tiny-reg")},  # type: ignore[misc]
    }
    sizes = [int(size) for size in args.sizes.split(",")]
    families = args.families.split(",")
    losses: dict[tuple[str, int], list[float]] = {(name, size): [] for name in families for size in sizes}
    checked = False
    for name in families:
        family = makers[name]()
        for seed in (int(s) for s in args.seeds.split(",")):
            recording = record_full_grid(family, seed, args.protocol, epochs)
            best = max(recording.test_scores)
            for size in sizes:
                for _ in range(args.draws):
                    subset = np.sort(rng.choice(len(pool), size=size, replace=False))
                    losses[name, size] += [full - halved for full, halved in replay(recording, subset).values()]
            print(f"  {name}, seed {seed}: {len(set(recording.head_sets))} layer sets, best head's test {best:.2f}")
            if not checked:
                subset = np.sort(rng.choice(len(pool), size=sizes[len(sizes) // 2], replace=False))
                print(f"  replay checked against a real halving run on {len(subset)} val images: "
                      f"{'same selections' if check_replay(family, recording, subset, seed, args.protocol, epochs) else 'DIFFERENT'}")  # fmt: skip
                checked = True

    print(f"\ntest points lost by halving against the full grid, per layer set and val draw (tolerance {TOLERANCE}):")
    print(f"  {'features':14s} {'val size':>8s} {'cases':>6s} {'mean':>6s} {'p95':>6s} {'worst':>6s} {'> tol':>8s} {'differ':>8s}")
    for name in [*families, "all"]:
        for size in sizes:
            cases = [loss for (family, at), found in losses.items() if at == size and name in (family, "all") for loss in found]
            print(f"  {name:14s} {size:8d} {len(cases):6d} {_summary(cases)}")


if __name__ == "__main__":
    main()
