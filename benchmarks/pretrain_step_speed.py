"""One pre-training step of our AIM against a timm ViT of the same dims with the same head and loss.

Both models get the same batch, the same prefix lengths (the prefix-causal mask goes to timm's
``forward_features(attn_mask=...)``), the same pixel head, normalised-pixel loss and AdamW groups;
a step is forward + backward + gradient clipping + optimizer step. The two are timed alternately
(A, B, A, B, ...) after warm-up steps, so drift of the machine's clock or load hits both, and the
script prints the median step times, their ratio (timm / ours: above 1.0 means ours is faster)
and the model FLOP/s each achieves against this machine's measured matmul peak.

The reference is timm's VisionTransformer with AIM's choices where timm has a switch (no class
token, no qkv/projection biases, LayerNorm eps 1e-6, final norm); it keeps timm's learned position
embedding (one add) where AIM has a fixed sin-cos table.

Usage: python benchmarks/pretrain_step_speed.py [--preset aim-tiny] [--batch-size 128] [--image-size 32]
       [--steps 20] [--device cpu|cuda] [--dtype fp32|bf16]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from functools import partial

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from aimbench.models.aim import PRESETS, prefix_causal_mask
from aimbench.pretrain.head import PixelHead
from aimbench.pretrain.objective import (
    build_model,
    init_weights,
    next_patch_loss,
    normalised_targets,
    patchify,
    sample_prefix_lengths,
)
from aimbench.pretrain.recipe import PretrainConfig, build_optimizer
from aimbench.pretrain.trainer import model_flops_per_image


class TimmReference(nn.Module):
    """timm's VisionTransformer as the trunk, our pixel head and loss on top: the same computation as AimPretrainModel."""

    def __init__(self, config: PretrainConfig) -> None:
        super().__init__()
        trunk = PRESETS[config.preset]
        self.patch = trunk.patch_size
        self.trunk = VisionTransformer(
            img_size=config.image_size, patch_size=trunk.patch_size, embed_dim=trunk.width, depth=trunk.depth, num_heads=trunk.heads,
            mlp_ratio=trunk.mlp_ratio, qkv_bias=False, proj_bias=False, class_token=False, global_pool="", num_classes=0,
            norm_layer=partial(nn.LayerNorm, eps=config.ln_eps),
        )  # fmt: skip
        self.head = PixelHead(trunk.width, self.patch * self.patch * trunk.in_chans, config.head, config.ln_eps)

    def forward(self, images: torch.Tensor, prefix_lengths: torch.Tensor) -> torch.Tensor:
        grid = (images.shape[-2] // self.patch, images.shape[-1] // self.patch)
        mask = prefix_causal_mask(prefix_lengths, grid[0] * grid[1])
        predictions = self.head(self.trunk.forward_features(images, attn_mask=mask), grid)
        with torch.no_grad():
            targets = normalised_targets(patchify(images.float(), self.patch))
        return next_patch_loss(predictions, targets, prefix_lengths)


def step_function(
    model: nn.Module, config: PretrainConfig, images: torch.Tensor, prefix: torch.Tensor, device: torch.device
) -> Callable[[], None]:
    optimizer, _ = build_optimizer(model, config)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if config.dtype == "bf16" else nullcontext()

    def step() -> None:
        with autocast:
            loss = model(images, prefix)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()

    return step


def timed(step: Callable[[], None], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of a square matmul, the best of ``repeats``: the machine's practical ceiling for these models."""
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    best = min(timed(lambda: a @ b, device) for _ in range(repeats))
    return 2 * size**3 / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="aim-tiny", choices=sorted(PRESETS))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=0, help="default: the preset's pre-training size")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per model (after 3 warm-up steps each)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    args = parser.parse_args()
    device = torch.device(args.device)
    config = PretrainConfig(args.preset, steps=1000, batch_size=args.batch_size, image_size=args.image_size, dtype=args.dtype)
    ours = build_model(config).to(device)
    torch.manual_seed(0)
    reference = TimmReference(config)
    init_weights(reference)
    reference.to(device)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch_size, 3, config.image_size, config.image_size, generator=generator).to(device)
    prefix = sample_prefix_lengths(args.batch_size, (config.image_size // PRESETS[args.preset].patch_size) ** 2, generator).to(device)
    steps = {"ours": step_function(ours, config, images, prefix, device), "timm": step_function(reference, config, images, prefix, device)}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():
        for _ in range(3):
            step()
    for _ in range(args.steps):
        for name, step in steps.items():
            times[name].append(timed(step, device))
    peak = matmul_peak(device, torch.bfloat16 if args.dtype == "bf16" else torch.float32)
    flops = model_flops_per_image(config) * args.batch_size
    counts = {name: sum(p.numel() for p in model.parameters()) for name, model in (("ours", ours), ("timm", reference))}
    print(f"{args.preset} at {config.image_size} px, batch {args.batch_size}, {args.dtype} on {device}; {args.steps} alternating timed steps each; "
          f"matmul peak {peak / 1e9:.1f} GFLOP/s; {flops / 1e9:.1f} GFLOP per step")  # fmt: skip
    print("model   params        median step   min step   model FLOP/s   of peak")
    for name, series in times.items():
        median = statistics.median(series)
        print(f"{name:<6}  {counts[name]:>12,}  {1000 * median:9.1f} ms  {1000 * min(series):7.1f} ms  "
              f"{flops / median / 1e9:8.1f} G     {100 * flops / median / peak:5.1f}%")  # fmt: skip
    ratio = statistics.median(times["timm"]) / statistics.median(times["ours"])
    print(f"ratio timm / ours (median step time): {ratio:.3f} ({'ours faster or equal' if ratio >= 1.0 else 'timm faster'})")


if __name__ == "__main__":
    main()
