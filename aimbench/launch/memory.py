"""The device memory one eval cell needs for its backbone: the card's hint per dtype, else an
estimate from the network's size. Local cost plans show it; the Slurm backend sizes jobs from it
(``aimbench.launch.slurm.resources``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from aimbench.cards.backbone_card import BackboneSpec

BYTES_PER_VALUE = {"fp32": 4, "bf16": 2, "fp16": 2}


@dataclass(frozen=True)
class MemoryNeed:
    gb: float
    dtype: str
    source: str  # "card" or "estimate"

    def describe(self) -> str:
        return f"{self.gb:g} GB {self.dtype} ({self.source})"


def memory_need(spec: BackboneSpec, dtype: str) -> MemoryNeed:
    """The card's hint for ``dtype``, else an estimate from the network's size (rounded up to 0.1 GB)."""
    if dtype in spec.memory_gb:
        return MemoryNeed(spec.memory_gb[dtype], dtype, "card")
    parameters = 12 * spec.depth * spec.dim**2  # attention (4 d^2) + MLP (8 d^2) per block
    gb = parameters * BYTES_PER_VALUE[dtype] / 1e9 * 1.2 + 1.0
    return MemoryNeed(math.ceil(gb * 10) / 10, dtype, "estimate")
