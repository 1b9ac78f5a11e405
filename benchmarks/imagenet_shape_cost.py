"""What probing every layer with the whole grid costs at ImageNet shape, next to one head on one block.

The shapes of AIM-600M on ImageNet-1k: 1000 classes, width 1536, 24 blocks plus the card's two
published windows (26 layer sets), patch-mean features (AIM has no cls token), the aim-v1
protocol's grids (linear: 6 lr x 3 wd, 100 epochs; attentive: 5 lr x 1 wd, 100 epochs, online).
Measured side by side in one run, on this machine:

1. the backbone forward per image: the real architecture of ``--backbone`` (random init, the
   card's resolution), all blocks read, under inference mode;
2. cached linear heads on synthetic features of those shapes, per training image and epoch:
   (a) one head (last block, one lr and wd), (b) every layer set x the full grid,
   (c) every layer set x the grid with successive halving (the default);
3. attentive heads, one optimizer step on synthetic token maps (N = 256 tokens): (a) one head,
   (b) every layer set x the grid.

Ratios are per image over the whole protocol, extraction included: cached linear
``(forward + epochs x heads) / (forward + epochs x one head)`` (the forward runs once per image,
the heads every epoch); online attentive ``(forward + heads) / (forward + one head)`` (both run
every step). Target: <= 1.3.

    python benchmarks/imagenet_shape_cost.py                  # CPU: a few minutes
    python benchmarks/imagenet_shape_cost.py --device cuda    # absolute images/s on a GPU
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from aimbench.adapters import load_backbone
from aimbench.cards.backbone_card import PATCH_MEAN, BackboneSpec
from aimbench.cards.registry import Registry
from aimbench.probes.attentive_grid import AttentiveGrid, SetNorms
from aimbench.probes.features import PooledFeatures, ProbeSource
from aimbench.probes.layer_sets import parse_layer_sets
from aimbench.probes.linear import train_linear_probes
from aimbench.probes.protocol import default_config

CLASSES = 1000


def forward_seconds_per_image(name: str, device: torch.device, batch: int, repeats: int) -> float:
    backbone = load_backbone(name, weights="random").to(device)
    size = backbone.preprocess.image_size
    images = torch.randn(batch, 3, size, size, device=device)
    blocks = list(range(backbone.depth))
    with torch.inference_mode():
        backbone.forward_layers(images, blocks)  # warm-up
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            backbone.forward_layers(images, blocks)
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
    return best / batch


def linear_seconds_per_image_epoch(
    sources: list[ProbeSource], dim: int, images: int, epochs: int, grid: dict, device: torch.device
) -> float:
    """Seconds per training image and epoch of ``train_linear_probes`` (val and test scoring included, 1/4 of train each)."""
    generator = torch.Generator().manual_seed(0)
    splits = [
        PooledFeatures(torch.randn(n, len(sources), dim, generator=generator), torch.randint(0, CLASSES, (n,), generator=generator))
        for n in (images, images // 4, images // 4)
    ]
    config = default_config("linear", epochs=epochs, **grid)
    start = time.perf_counter()
    train_linear_probes(*splits, sources, CLASSES, config, seed=0, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / (images * epochs)


def attentive_seconds_per_image_step(
    sets: int, points: int, dim: int, heads: int, batch: int, protocol_batch: int, device: torch.device, repeats: int
) -> float:
    """Seconds per image of one training step of every attentive head: BatchNorm over tokens, the
    heads' forward and backward on a micro-batch of ``batch`` images (per image), plus one AdamW
    step shared by the protocol's batch of ``protocol_batch`` images (as the trainer accumulates
    micro-batches into one optimizer step)."""
    tokens = torch.randn(sets, batch, 256, dim, device=device)
    labels = torch.randint(0, CLASSES, (batch,), device=device)
    norms = SetNorms(sets, dim).to(device)
    grids = [AttentiveGrid(list(range(sets)), dim, CLASSES, heads).to(device) for _ in range(points)]
    optimizer = torch.optim.AdamW([p for grid in grids for p in grid.parameters()], lr=1e-3)

    def forward_backward() -> None:
        with torch.no_grad():
            normed = norms(tokens)
        logits = torch.stack([grid(normed) for grid in grids])  # (G, L, B, C), as AttentiveTrainer.head_logits
        loss = F.cross_entropy(logits.reshape(-1, CLASSES), labels.repeat(points * sets))
        loss.backward()

    def best_of(work: Callable[[], None]) -> float:
        work()  # warm-up
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            work()
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
        return best

    heads_time = best_of(forward_backward)
    step_time = best_of(optimizer.step)
    return heads_time / batch + step_time / protocol_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="aim-600m", help="the architecture whose forward is timed and whose shapes the heads take")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=512, help="synthetic training images for the linear heads")
    parser.add_argument("--epochs", type=int, default=8, help="epochs timed (the cost per epoch is scaled to the protocol's)")
    parser.add_argument("--forward-batch", type=int, default=2)
    parser.add_argument("--attentive-batch", type=int, default=0, help="micro-batch of the attentive heads [default: the protocol's]")
    parser.add_argument("--probes", default="linear,attentive", help="which probe kinds to time")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    spec = Registry.load().backbone(args.backbone)
    sets = parse_layer_sets("all," + ",".join(spec.windows), spec.depth, spec.windows)
    sources = [ProbeSource(layer_set, token) for layer_set in sets for token in spec.probe_tokens]
    last = [source for source in sources if source.layer_set.blocks == (spec.depth - 1,) and source.token == PATCH_MEAN]
    print(f"{args.backbone}: {spec.depth} blocks, width {spec.dim}, {len(sets)} layer sets, tokens {', '.join(spec.probe_tokens)}; "
          f"{CLASSES} classes; device {device} ({torch.get_num_threads()} threads)")  # fmt: skip

    forward = forward_seconds_per_image(args.backbone, device, args.forward_batch, repeats=2)
    print(f"\nbackbone forward: {forward:.3f} s/image ({1 / forward:.2f} images/s)")
    if "linear" in args.probes:
        linear_table(spec, sources, last, forward, args, device)
    if "attentive" in args.probes:
        attentive_table(spec, len(sets), forward, args, device)


def linear_table(
    spec: BackboneSpec, sources: list[ProbeSource], last: list[ProbeSource], forward: float, args: argparse.Namespace, device: torch.device
) -> None:
    linear = default_config("linear")
    one_point = {"learning_rates": linear.learning_rates[:1], "weight_decays": linear.weight_decays[:1], "grid_search": "full"}
    full_grid = {"grid_search": "full"}  # the protocols' default
    timed = {
        "one head": linear_seconds_per_image_epoch(last, spec.dim, args.images, args.epochs, one_point, device),
        "full grid": linear_seconds_per_image_epoch(sources, spec.dim, args.images, args.epochs, full_grid, device),
        "halving (--grid-search halving)": linear_seconds_per_image_epoch(
            sources, spec.dim, args.images, args.epochs, {"grid_search": "halving"}, device
        ),
    }
    heads_per_set = len(spec.probe_tokens) * len(linear.learning_rates) * len(linear.weight_decays)
    print(f"\ncached linear, {linear.epochs} epochs (timed {args.epochs} on {args.images} images), {heads_per_set} heads per layer set:")
    print(f"  {'':34s} {'heads s/image':>14s} {'ratio':>7s}")
    base = forward + linear.epochs * timed["one head"]
    for name, per_epoch in timed.items():
        total = forward + linear.epochs * per_epoch
        print(f"  {name:34s} {linear.epochs * per_epoch:14.3f} {total / base:7.2f}")


def attentive_table(spec: BackboneSpec, sets: int, forward: float, args: argparse.Namespace, device: torch.device) -> None:
    attentive = default_config("attentive")
    points = len(attentive.learning_rates) * len(attentive.weight_decays)
    batch, micro = attentive.batch_size, args.attentive_batch or attentive.micro_batch  # k/v gradients are per micro-batch, AdamW per batch
    one = attentive_seconds_per_image_step(1, 1, spec.dim, spec.heads, micro, batch, device, repeats=2)
    every = attentive_seconds_per_image_step(sets, points, spec.dim, spec.heads, micro, batch, device, repeats=2)
    print(f"\nonline attentive, per image and step (the backbone forward runs every step), {points} grid points:")
    print(f"  {'':34s} {'heads s/image':>14s} {'ratio':>7s}")
    for name, heads in (("one head", one), (f"{sets} layer sets x full grid", every)):
        print(f"  {name:34s} {heads:14.4f} {(forward + heads) / (forward + one):7.2f}")


if __name__ == "__main__":
    main()
