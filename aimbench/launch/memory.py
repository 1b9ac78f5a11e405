"""The device memory one eval cell needs of each of its ranks: its backbone's (the card's hint per
dtype, else an estimate from the network's size; every rank holds the whole backbone), its heads'
(the probe kind's estimate for the layer sets the busiest rank owns: all of them on a CPU, where
nothing splits them; on a GPU the least a pass can hold, as attentive heads that do not fit train in
passes) and what a rank holds of a batch beside them (the kind's ``Exchange.buffer_bytes``: the
block outputs it sends to the sets' owners, the attentive heads' batch tokens). Cost plans show it; the Slurm backend sizes jobs from it
(``aimbench.launch.slurm.resources``): a GPU must hold one rank's need, not the cell's."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from aimbench.cards.backbone_card import BackboneSpec
from aimbench.cards.registry import Registry
from aimbench.dtypes import BYTES
from aimbench.launch.cells import Cell
from aimbench.launch.shape import patch_tokens, plan_shape
from aimbench.probes import probe_kind


@dataclass(frozen=True)
class MemoryNeed:
    gb: float  # the backbone's
    dtype: str
    source: str  # of the backbone's: "card" or "estimate"
    heads_gb: float = 0.0  # the heads' (the probe kind's estimate), on the busiest rank
    exchange_gb: float = 0.0  # what a rank holds of a batch beside its heads (the kind's ``Exchange.buffer_bytes``)
    ranks: int = 1  # the ranks that share the cell: every number here is one rank's

    @property
    def total_gb(self) -> float:
        """One rank's: what one device must hold."""
        return round(self.gb + self.heads_gb + self.exchange_gb, 1)

    def describe(self) -> str:
        heads = f" + {self.heads_gb:g} GB heads" if self.heads_gb else ""
        exchange = f" + {self.exchange_gb:g} GB batch" if self.exchange_gb else ""
        per_rank = f" per rank of {self.ranks}" if self.ranks > 1 else ""
        return f"{self.gb:g} GB {self.dtype} ({self.source}){heads}{exchange}{per_rank}"


def memory_need(spec: BackboneSpec, dtype: str) -> MemoryNeed:
    """The card's hint for ``dtype``, else an estimate from the network's size (rounded up to 0.1 GB)."""
    if dtype in spec.memory_gb:
        return MemoryNeed(spec.memory_gb[dtype], dtype, "card")
    parameters = 12 * spec.depth * spec.dim**2  # attention (4 d^2) + MLP (8 d^2) per block
    gb = parameters * BYTES[dtype] / 1e9 * 1.2 + 1.0
    return MemoryNeed(math.ceil(gb * 10) / 10, dtype, "estimate")


def cell_memory(cell: Cell, registry: Registry, gpu: bool, world: int = 1, chunk: int = 64) -> MemoryNeed:
    """What ``cell`` needs of each of the ``world`` devices that run it: its backbone's memory, its
    heads' on the busiest rank (on a ``gpu`` the least a pass holds, elsewhere all of them) and the
    batch it holds (on a ``gpu``, of the least pass: a layer set a rank), each rounded up to 0.1 GB."""
    spec = registry.backbone(cell.backbone)
    kind, shape, config = probe_kind(cell.probe), plan_shape(cell, registry, patch_tokens(spec), chunk), cell.probe_config
    heads = kind.least_head_memory_bytes(config, shape, world) if gpu else kind.head_memory_bytes(config, shape, world)
    sent = kind.exchange(config, replace(shape, layer_sets=list(shape.layer_sets[:world])) if gpu else shape, world).buffer_bytes
    return replace(memory_need(spec, cell.dtype), heads_gb=_tenths(heads), exchange_gb=_tenths(sent), ranks=world)


def _tenths(size: int) -> float:
    """Bytes in GB, rounded up to 0.1 GB."""
    return math.ceil(size / 1e8) / 10
