"""The device memory one eval cell needs: its backbone's (the card's hint per dtype, else an
estimate from the network's size) and its heads' (the probe kind's estimate: all of them on a CPU,
where nothing splits them; on a GPU the least a pass can hold, as attentive heads that do not fit
train in passes). Cost plans show it; the Slurm backend sizes jobs from it
(``aimbench.launch.slurm.resources``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from aimbench.cards.backbone_card import BackboneSpec
from aimbench.cards.registry import Registry
from aimbench.launch.cells import Cell
from aimbench.launch.shape import patch_tokens, plan_shape
from aimbench.probes import probe_kind

BYTES_PER_VALUE = {"fp32": 4, "bf16": 2, "fp16": 2}


@dataclass(frozen=True)
class MemoryNeed:
    gb: float  # the backbone's
    dtype: str
    source: str  # of the backbone's: "card" or "estimate"
    heads_gb: float = 0.0  # the heads' (the probe kind's estimate)

    @property
    def total_gb(self) -> float:
        return round(self.gb + self.heads_gb, 1)

    def describe(self) -> str:
        heads = f" + {self.heads_gb:g} GB heads" if self.heads_gb else ""
        return f"{self.gb:g} GB {self.dtype} ({self.source}){heads}"


def memory_need(spec: BackboneSpec, dtype: str) -> MemoryNeed:
    """The card's hint for ``dtype``, else an estimate from the network's size (rounded up to 0.1 GB)."""
    if dtype in spec.memory_gb:
        return MemoryNeed(spec.memory_gb[dtype], dtype, "card")
    parameters = 12 * spec.depth * spec.dim**2  # attention (4 d^2) + MLP (8 d^2) per block
    gb = parameters * BYTES_PER_VALUE[dtype] / 1e9 * 1.2 + 1.0
    return MemoryNeed(math.ceil(gb * 10) / 10, dtype, "estimate")


def cell_memory(cell: Cell, registry: Registry, gpu: bool) -> MemoryNeed:
    """What ``cell`` needs of a device: its backbone's memory, and its heads' (on a ``gpu`` the least
    a pass holds, elsewhere all of them), rounded up to 0.1 GB."""
    spec = registry.backbone(cell.backbone)
    kind, shape = probe_kind(cell.probe), plan_shape(cell, registry, patch_tokens(spec))
    heads = kind.least_head_memory_bytes(cell.probe_config, shape) if gpu else kind.head_memory_bytes(cell.probe_config, shape)
    return replace(memory_need(spec, cell.dtype), heads_gb=math.ceil(heads / 1e8) / 10)
