"""AIM's pre-training head: an MLP-only decoder from trunk tokens to the pixels of the next patch.

As the paper (and Apple's l3m ``SimpleDecoder`` config for AIM v1) describes it: a projection
from the trunk width to the head width, the 2-D sin-cos position embedding added, residual
pre-LayerNorm MLP blocks (expansion 4, no attention, so each position decodes independently and
the prefix-causal trunk alone carries context), a LayerNorm and a linear map to the p*p*3 patch
values. No biases, like the trunk. The head is thrown away after pre-training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from aimbench.models.aim import LN_EPS, run_block, sincos_2d


@dataclass(frozen=True)
class HeadConfig:
    width: int = 2048
    blocks: int = 12
    mlp_ratio: int = 4


# The paper's head for every AIM size; smaller heads for the CPU presets (in proportion to the trunk).
HEAD_PRESETS: dict[str, HeadConfig] = {
    "aim-600m": HeadConfig(),
    "aim-1b": HeadConfig(),
    "aim-3b": HeadConfig(),
    "aim-7b": HeadConfig(),
    "aim-tiny": HeadConfig(width=256, blocks=2),
    "aim-micro": HeadConfig(width=64, blocks=1),
}


class HeadBlock(nn.Module):
    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        hidden = config.width * config.mlp_ratio
        self.norm = nn.LayerNorm(config.width, eps=LN_EPS)
        self.fc1 = nn.Linear(config.width, hidden, bias=False)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, config.width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.act(self.fc1(self.norm(x))))


class PixelHead(nn.Module):
    """(B, K, trunk width) post-trunk-norm tokens -> (B, K, patch_values) pixel predictions."""

    def __init__(self, trunk_width: int, patch_values: int, config: HeadConfig) -> None:
        super().__init__()
        self.proj = nn.Linear(trunk_width, config.width, bias=False)
        self.blocks = nn.ModuleList(HeadBlock(config) for _ in range(config.blocks))
        self.norm = nn.LayerNorm(config.width, eps=LN_EPS)
        self.out = nn.Linear(config.width, patch_values, bias=False)
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        x = self.proj(tokens)
        x = x + sincos_2d(grid[0], grid[1], x.shape[-1]).to(device=x.device, dtype=x.dtype)
        for block in self.blocks:
            x = run_block(block, self.grad_checkpointing, x)
        return self.out(self.norm(x))
