"""AIM v1 (El-Nouby et al., 2024): our own trunk, key for key the layout of Apple's checkpoints.

The module tree is ``preprocessor.patchifier.{proj,norm}`` and ``trunk.blocks.N.{norm_1,
attn.qkv, attn.proj, norm_2, mlp.fc1, mlp.fc2}`` plus ``trunk.post_trunk_norm``, so an official
backbone file loads with ``strict=True`` and no renaming, and a trunk we pre-train exports a file
any AIM tool reads. Architecture facts: Conv2d patch embedding with bias followed by a LayerNorm;
LayerNorm eps 1e-6 everywhere in the released models (``AimConfig.ln_eps``: Apple's l3m pre-trains
with 1e-5, so a trunk aimbench pre-trains records its eps in the exported file); pre-norm blocks; exact GELU; no bias in qkv/proj/fc1/fc2; no cls
token; a fixed 2-D sin-cos position embedding computed from the input grid (not a parameter, not
in the checkpoint), added after the patch norm. Pre-training uses a prefix-causal mask; probing
runs fully bidirectional and reads raw block outputs (no post-trunk norm).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from aimbench.models.presets import LN_EPS, LN_EPS_METADATA, PRESETS, AimConfig

__all__ = ["AIM", "LN_EPS", "LN_EPS_METADATA", "PRESETS", "AimConfig", "build_aim"]


def sincos_2d(grid_h: int, grid_w: int, dim: int) -> torch.Tensor:
    """(grid_h * grid_w, dim) MAE-layout embedding in raster order.

    The first dim/2 channels encode the column (x) index, the last dim/2 the row (y) index; each
    half is [sin(pos * w), cos(pos * w)] with w_i = 1 / 10000^(i / (dim / 4)).
    """
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs a width divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    rows, cols = torch.meshgrid(torch.arange(grid_h, dtype=torch.float64), torch.arange(grid_w, dtype=torch.float64), indexing="ij")

    def encode(positions: torch.Tensor) -> torch.Tensor:
        angles = positions.reshape(-1, 1) * omega
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([encode(cols), encode(rows)], dim=1).float()


def run_block(block: nn.Module, recompute: bool, *inputs: torch.Tensor | None) -> torch.Tensor:
    """``block(*inputs)``; with ``recompute`` (activation checkpointing) and grad enabled, its activations
    are not kept for the backward but recomputed there: memory per block falls to its input."""
    if recompute and torch.is_grad_enabled():
        return checkpoint(block, *inputs, use_reentrant=False)
    return block(*inputs)


def prefix_causal_mask(prefix_lengths: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Boolean (B, 1, N, N) mask, True = may attend: query q sees key k iff k < S or k <= q."""
    keys = torch.arange(num_tokens, device=prefix_lengths.device)
    causal = keys[None, :] <= keys[:, None]  # (N, N): k <= q
    prefix = keys[None, None, :] < prefix_lengths[:, None, None]  # (B, 1, N): k < S
    return (causal[None] | prefix)[:, None]


class PatchEmbed(nn.Module):
    def __init__(self, config: AimConfig) -> None:
        super().__init__()
        self.patch_size = config.patch_size
        self.proj = nn.Conv2d(config.in_chans, config.width, config.patch_size, stride=config.patch_size, bias=True)
        self.norm = nn.LayerNorm(config.width, eps=config.ln_eps)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(images).flatten(2).transpose(1, 2))


class Preprocessor(nn.Module):
    """Patchify, normalise, add the sin-cos embedding of the actual input grid."""

    def __init__(self, config: AimConfig) -> None:
        super().__init__()
        self.patchifier = PatchEmbed(config)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.patchifier(images)
        p = self.patchifier.patch_size
        pos = sincos_2d(images.shape[-2] // p, images.shape[-1] // p, tokens.shape[-1])
        return tokens + pos.to(device=tokens.device, dtype=tokens.dtype)


class Attention(nn.Module):
    def __init__(self, config: AimConfig) -> None:
        super().__init__()
        self.heads = config.heads
        self.qkv = nn.Linear(config.width, 3 * config.width, bias=False)
        self.proj = nn.Linear(config.width, config.width, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class MLP(nn.Module):
    """Linear, exact GELU, linear, no biases: the trunk's MLP and the pre-training head's."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden, bias=False)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, config: AimConfig) -> None:
        super().__init__()
        self.norm_1 = nn.LayerNorm(config.width, eps=config.ln_eps)
        self.attn = Attention(config)
        self.norm_2 = nn.LayerNorm(config.width, eps=config.ln_eps)
        self.mlp = MLP(config.width, config.mlp_hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm_1(x), mask)
        return x + self.mlp(self.norm_2(x))


class Trunk(nn.Module):
    def __init__(self, config: AimConfig) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.post_trunk_norm = nn.LayerNorm(config.width, eps=config.ln_eps)


class AIM(nn.Module):
    """The AIM v1 backbone (preprocessor + trunk); heads live outside it."""

    def __init__(self, config: AimConfig) -> None:
        super().__init__()
        self.config = config
        self.preprocessor = Preprocessor(config)
        self.trunk = Trunk(config)
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward (timm's switch of the same name)."""
        self.grad_checkpointing = enable

    def forward_layers(self, images: torch.Tensor, layers: Sequence[int], prefix_lengths: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Raw outputs (B, N, D) of ``layers`` (sorted block indices), stopping at the last one."""
        wanted = set(layers)
        x = self.preprocessor(images)
        mask = None if prefix_lengths is None else prefix_causal_mask(prefix_lengths, x.shape[1])
        outputs = []
        for index, block in enumerate(self.trunk.blocks[: max(layers) + 1]):
            x = run_block(block, self.grad_checkpointing, x, mask)
            if index in wanted:
                outputs.append(x)
        return outputs

    def forward(self, images: torch.Tensor, prefix_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """All blocks then the post-trunk norm: what the pre-training head reads."""
        last = self.forward_layers(images, [self.config.depth - 1], prefix_lengths)[0]
        return self.trunk.post_trunk_norm(last)


def build_aim(name: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, ln_eps: float = LN_EPS) -> AIM:
    """Build a preset (with the LayerNorm eps its weights were trained with); on the ``meta`` device
    no memory is allocated, so a 7B costs nothing until its weights are assigned with
    ``load_state_dict(..., assign=True)``."""
    with torch.device(device):
        return AIM(replace(PRESETS[name], ln_eps=ln_eps)).to(dtype)
