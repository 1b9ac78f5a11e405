"""AIM's pre-training head: an MLP-only decoder from trunk tokens to the pixels of the next patch.

It computes what Apple's l3m ``SimpleDecoder`` computes as configured for AIM v1
(``configs/aimv1``: ``attn_target: GenericIdentity``, ``use_bias: false``): a projection from the
trunk width to the head width **with a bias**, the 2-D sin-cos position embedding added, residual
pre-LayerNorm blocks, a LayerNorm, and a linear map to the p*p*3 patch values **with a bias**
(l3m builds both outer projections with ``bias=True`` whatever ``use_bias`` says). Each block is
l3m's transformer block with its attention replaced by an identity, so its first residual branch
adds the normalised input itself, ``x + LN_1(x)``, before the bias-free MLP branch
``x + MLP(LN_2(x))`` (expansion 4). No attention: each position decodes independently and the
prefix-causal trunk alone carries context. The head is thrown away after pre-training.
Golden fixtures from l3m's own module check all of this (``tests/pretrain/test_official_equality.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from aimbench.models.aim import MLP, run_block, sincos_2d


@dataclass(frozen=True)
class HeadConfig:
    width: int = 2048
    blocks: int = 12
    mlp_ratio: int = 4


# The paper's head for every AIM size; smaller heads for the CPU presets (in proportion to the trunk):
# a deviation from l3m's config, recorded with the run as ``PretrainConfig.head``.
HEAD_PRESETS: dict[str, HeadConfig] = {
    "aim-600m": HeadConfig(),
    "aim-1b": HeadConfig(),
    "aim-3b": HeadConfig(),
    "aim-7b": HeadConfig(),
    "aim-tiny": HeadConfig(width=256, blocks=2),
    "aim-micro": HeadConfig(width=64, blocks=1),
}


class HeadBlock(nn.Module):
    """l3m's ``Block`` with ``GenericIdentity`` attention: ``x + LN_1(x)``, then ``+ MLP(LN_2(x))``."""

    def __init__(self, config: HeadConfig, ln_eps: float) -> None:
        super().__init__()
        self.norm_1 = nn.LayerNorm(config.width, eps=ln_eps)
        self.norm_2 = nn.LayerNorm(config.width, eps=ln_eps)
        self.mlp = MLP(config.width, config.width * config.mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.norm_1(x)
        return x + self.mlp(self.norm_2(x))


class PixelHead(nn.Module):
    """(B, K, trunk width) post-trunk-norm tokens -> (B, K, patch_values) pixel predictions."""

    def __init__(self, trunk_width: int, patch_values: int, config: HeadConfig, ln_eps: float) -> None:
        super().__init__()
        self.proj = nn.Linear(trunk_width, config.width, bias=True)
        self.blocks = nn.ModuleList(HeadBlock(config, ln_eps) for _ in range(config.blocks))
        self.norm = nn.LayerNorm(config.width, eps=ln_eps)
        self.out = nn.Linear(config.width, patch_values, bias=True)
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        x = self.proj(tokens)
        # added in fp32, as l3m adds its fp32 ``decoder_pos_embed``: under bf16 autocast the
        # head's residual stream is then fp32, not bf16
        x = x + sincos_2d(grid[0], grid[1], x.shape[-1]).to(x.device)
        for block in self.blocks:
            x = run_block(block, self.grad_checkpointing, x)
        return self.out(self.norm(x))
