"""What probing every layer with the whole grid costs at ImageNet shape, next to one head on one block.

The shapes of AIM-600M on ImageNet-1k: 1000 classes, width 1536, 24 blocks plus the card's two
published windows (26 layer sets), patch-mean features (AIM has no cls token), the grids of the
linear protocol (``--protocol``, default: the linear default, dinov2-linear: 13 lrs, 12,500 steps of
1,024 views, SGD; aim-v1: 6 lr x 3 wd, 100 epochs, AdamW) and of the attentive default (aim-v2:
7 lr x 2 wd, 100 epochs, online). Measured side by side in one run, on this machine:

1. the backbone forward per image: the real architecture of ``--backbone`` (random init, the
   card's resolution), all blocks read, under inference mode;
2. linear heads on synthetic features of those shapes, per training view in steady state (what a
   run pays once is printed beside it): (a) one head (last block, one lr and wd), (b) every layer
   set x the full grid, (c) every layer set x the grid with successive halving (opt-in); each at
   bf16 (``head_precision``: bf16 products over fp32 weights, opt-in) and at fp32 (the protocols'
   default);
3. attentive heads, one optimizer step on synthetic token maps (N = 256 tokens): (a) one head,
   (b) every layer set x the grid (``--attentive-sets K``: K sets timed and scaled to all, for a
   machine without the memory of aim-v2's 26 x 14 heads, about 36 GB with AdamW's state).

Ratios are per image over the whole protocol, extraction included: cached linear
``(forward + views x heads) / (forward + views x one head)`` (the forward runs once per image, the
heads on every training view: epochs of them, or the fixed steps' batches at ImageNet's size);
online linear and attentive ``(forward + heads) / (forward + one head)`` per view (both run every
step). Target: <= 1.3. The row of the protocol's own path (its grid search and head precision) is
marked, and its ratio printed last.

    python benchmarks/imagenet_shape_cost.py --attentive-sets 8   # CPU: about ten minutes
    python benchmarks/imagenet_shape_cost.py --device cuda    # absolute images/s on a GPU
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from aimbench.adapters import load_backbone
from aimbench.cards.backbone_card import PATCH_MEAN, BackboneSpec, column_kinds
from aimbench.cards.registry import Registry
from aimbench.identity import DEFAULT_PROTOCOLS
from aimbench.probes.attentive.grid import AttentiveGrid, SetNorms
from aimbench.probes.features.extract import PooledFeatures, ProbeSource
from aimbench.probes.features.layer_sets import parse_layer_sets
from aimbench.probes.linear.config import LinearProbeConfig
from aimbench.probes.linear.heads import LinearHeads
from aimbench.probes.linear.training import train_linear_probes
from aimbench.probes.protocol import default_config

CLASSES = 1000
IMAGENET_TRAIN = 1_268_355  # ImageNet-1k's train split less aim-v1's 1% val, as its task card carves it
VAL_SHARE, TEST_SHARE = 12_812 / 1_268_355, 50_000 / 1_268_355  # of train: aim-v1's 1% val of ImageNet's train, and its val as test


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
    sources: list[ProbeSource], dim: int, images: int, epochs: int, protocol: str, grid: dict, device: torch.device
) -> tuple[float, float]:
    """(steady, once): seconds per training image and epoch of the heads' training steps in steady
    state, and the seconds a run pays once. Every ``LinearHeads.step`` is timed; the first step of
    each set of heads (the grid's, then the survivors' after each halving rung) first touches its
    gigabytes of weights, moments and buffers (tens of seconds at this shape on this machine, where
    page faults are slow), so it counts in ``once`` beyond the median of that set's other steps.
    Over the protocol's 100 ImageNet epochs (500k steps) that one-time cost is noise; in a
    benchmark of a few steps it would be most of the time. Scoring (val, 1% of ImageNet's train,
    by every head at each rung and at the end) is not counted: it is a forward of 1% of the
    images, once per rung."""
    generator = torch.Generator().manual_seed(0)
    splits = [
        PooledFeatures(torch.randn(n, len(sources), dim, generator=generator), torch.randint(0, CLASSES, (n,), generator=generator))
        for n in (images, max(1, round(images * VAL_SHARE)), max(1, round(images * TEST_SHARE)))
    ]
    steps: list[list[float]] = []  # per set of heads, the duration of each of its steps
    step = LinearHeads.step

    def timed(heads: LinearHeads, x: torch.Tensor, y: torch.Tensor) -> None:
        start = time.perf_counter()
        step(heads, x, y)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if not hasattr(heads, "benchmark_steps"):
            heads.benchmark_steps = []  # type: ignore[attr-defined]
            steps.append(heads.benchmark_steps)  # type: ignore[attr-defined]
        heads.benchmark_steps.append(time.perf_counter() - start)  # type: ignore[attr-defined]

    LinearHeads.step = timed  # type: ignore[method-assign]
    try:
        config = default_config("linear", protocol, epochs=epochs, epoch_length=0, **grid)  # passes over the synthetic images
        train_linear_probes(*splits, sources, CLASSES, config, seed=0, device=device)
    finally:
        LinearHeads.step = step  # type: ignore[method-assign]
    steady = once = 0.0
    for durations in steps:
        typical = statistics.median(durations[1:]) if len(durations) > 1 else durations[0]
        steady += typical + sum(durations[1:])
        once += max(durations[0] - typical, 0.0)  # a first step faster than the median paid nothing extra
    return steady / (images * epochs), once


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
    parser.add_argument("--images", type=int, default=1024, help="synthetic training images for the linear heads")
    parser.add_argument("--epochs", type=int, default=8, help="linear: epochs timed (steady state, scaled to the protocol's)")
    parser.add_argument("--forward-batch", type=int, default=2)
    parser.add_argument("--attentive-batch", type=int, default=0, help="micro-batch of the attentive heads [default: the protocol's]")
    parser.add_argument(
        "--attentive-sets", type=int, default=0, help="attentive: time this many layer sets' heads and scale [default: all]"
    )
    parser.add_argument("--probes", default="linear,attentive", help="which probe kinds to time")
    parser.add_argument("--head-precisions", default="bf16,fp32", help="linear heads' training precisions to time")
    parser.add_argument("--protocol", default=DEFAULT_PROTOCOLS["linear"], help="the linear recipe timed [default: the linear default]")
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
    linear = default_config("linear", args.protocol)
    assert isinstance(linear, LinearProbeConfig)
    one_point = {"learning_rates": linear.learning_rates[:1], "weight_decays": linear.weight_decays[:1], "grid_search": "full"}
    kinds = column_kinds(spec.probe_tokens, linear.token_kinds)
    heads_per_set = len(kinds) * len(linear.learning_rates) * len(linear.weight_decays)
    # images the heads train on per training image over the protocol: its epochs, or its fixed steps' batches at ImageNet's size
    seen = linear.training_images(IMAGENET_TRAIN) / IMAGENET_TRAIN
    online = linear.data_mode == "online"
    print(f"\n{linear.data_mode} linear under {args.protocol} ({linear.optimizer}, {seen:.1f} training views per image), "
          f"{heads_per_set} heads per layer set ({', '.join(kinds)}); steady-state steps timed over {args.epochs} passes of {args.images} images;")  # fmt: skip
    print("each ratio against one head at the same precision, per image over the protocol, "
          + ("the backbone run for every view (online)" if online else "the backbone run once per image (cached)"))  # fmt: skip
    print(f"  {'':44s} {'heads s/image':>14s} {'ratio':>7s}")
    default = (linear.grid_search, linear.head_precision)
    sets = len({source.layer_set for source in sources})
    ratios = {}
    for precision in args.head_precisions.split(","):
        timed = {
            f"one head, {precision}": one_point,
            f"{sets} layer sets x full grid, {precision}": {"grid_search": "full"},
            f"{sets} layer sets x halving, {precision}": {"grid_search": "halving"},
        }
        base = None
        for name, grid in timed.items():
            steady, once = linear_seconds_per_image_epoch(
                last if base is None else sources,
                spec.dim,
                args.images,
                args.epochs,
                args.protocol,
                {**grid, "head_precision": precision},
                device,
            )
            heads = seen * steady
            total = (seen * forward if online else forward) + heads
            base = total if base is None else base
            path = (grid["grid_search"], precision) if grid is not one_point else None
            ratios[path] = total / base
            print(f"  {name:44s} {heads:14.3f} {ratios[path]:7.2f}   (once: {once:.1f} s){'   <- default' if path == default else ''}")
    if default in ratios:
        print(
            f"default linear path ({args.protocol}: grid search {default[0]}, head precision {default[1]}): {ratios[default]:.2f} x one head"
        )


def attentive_table(spec: BackboneSpec, sets: int, forward: float, args: argparse.Namespace, device: torch.device) -> None:
    attentive = default_config("attentive")
    points = len(attentive.learning_rates) * len(attentive.weight_decays)
    batch, micro = attentive.batch_size, args.attentive_batch or attentive.micro_batch  # k/v gradients are per micro-batch, AdamW per batch
    timed = min(sets, args.attentive_sets or sets)  # the whole grid of every set can exceed a CPU machine's memory
    one = attentive_seconds_per_image_step(1, 1, spec.dim, spec.heads, micro, batch, device, repeats=2)
    every = attentive_seconds_per_image_step(timed, points, spec.dim, spec.heads, micro, batch, device, repeats=2) * sets / timed
    scaled = "" if timed == sets else f"; timed on {timed} of the {sets} layer sets and scaled (each set's heads are independent)"
    print(f"\nonline attentive, per image and step (the backbone forward runs every step), {points} grid points{scaled}:")
    print(f"  {'':34s} {'heads s/image':>14s} {'ratio':>7s}")
    for name, heads in (("one head", one), (f"{sets} layer sets x full grid", every)):
        print(f"  {name:34s} {heads:14.4f} {(forward + heads) / (forward + one):7.2f}")


if __name__ == "__main__":
    main()
