"""The AIM architectures by name, as data: free of torch, so planning (disk and cost estimates) and
the command line's help can read them without loading the network code (``aimbench.models.aim``)."""

from __future__ import annotations

from dataclasses import dataclass

LN_EPS = 1e-6  # ml-aim's LayerNorm, the released checkpoints' model
LN_EPS_METADATA = "ln_eps"  # the key under which an exported trunk records the eps it was trained with


@dataclass(frozen=True)
class AimConfig:
    """One AIM trunk's shape: width, blocks, attention heads, patch size (pixels), MLP ratio, LayerNorm eps."""

    width: int
    depth: int
    heads: int
    patch_size: int = 14
    mlp_ratio: int = 4
    in_chans: int = 3
    ln_eps: float = LN_EPS

    @property
    def mlp_hidden(self) -> int:
        return self.width * self.mlp_ratio


PRESETS: dict[str, AimConfig] = {
    # the paper's models (head dim 128, patch 14)
    "aim-600m": AimConfig(width=1536, depth=24, heads=12),
    "aim-1b": AimConfig(width=2048, depth=24, heads=16),
    "aim-3b": AimConfig(width=3072, depth=24, heads=24),
    "aim-7b": AimConfig(width=4096, depth=32, heads=32),
    # CPU-sized presets for tests, smoke runs and small pre-training experiments
    "aim-tiny": AimConfig(width=128, depth=6, heads=2, patch_size=4),
    "aim-micro": AimConfig(width=32, depth=3, heads=2, patch_size=4),
}
