"""The world-size arithmetic of a cost plan: how one cell's work divides over its ranks, and what
moving block outputs between them costs in time.

A cell on ``W`` ranks (``RunOptions.ranks``, over ``RunOptions.nodes`` machines) follows
``aimbench.probes.ownership``: each batch's images are forwarded in whole ``--batch-size`` chunks
spread over the ranks (so the busiest rank makes ``ceil(chunks / W)`` of them, not always
``1 / W`` of the batch), and the heads of each layer set train on the one rank that owns the set
(so the busiest rank trains ``most_sets_per_rank(L, W)`` of the L sets' heads). The block outputs
travel from the ranks that computed them to the owners; the plan adds their time to the compute,
assuming no overlap (a run that overlaps them is faster, never slower than planned).

Link bandwidths (bytes a rank sends per second), stated so a plan's communication time can be
checked and redone for another machine:

* :data:`INTRA_NODE_BYTES_PER_SECOND`: NVLink 4 on an H100 SXM gives each GPU 900 GB/s, both
  directions together (NVIDIA H100 Tensor Core GPU datasheet), 450 GB/s each way; a plan
  assumes two thirds of that reached by an all-to-all, 300 GB/s. PCIe-only GPUs (L40S) are slower.
* :data:`INTER_NODE_BYTES_PER_SECOND`: one 200 Gb/s InfiniBand HDR port per GPU at line rate,
  25 GB/s (a DGX H100 has a 400 Gb/s NDR port per GPU, so this is the conservative half of it;
  clusters with fewer ports per node are slower).
"""

from __future__ import annotations

from dataclasses import dataclass

from aimbench.launch.options import RunOptions
from aimbench.probes import most_sets_per_rank, row_bounds

INTRA_NODE_BYTES_PER_SECOND = 300e9
INTER_NODE_BYTES_PER_SECOND = 25e9


@dataclass(frozen=True)
class Ranks:
    """How many ranks run one cell together, over how many nodes (the same number on each)."""

    world: int = 1
    nodes: int = 1

    @classmethod
    def of(cls, options: RunOptions) -> Ranks:
        return cls(options.ranks, options.nodes)

    @property
    def per_node(self) -> int:
        return self.world // self.nodes

    def describe(self) -> str:
        """``1 GPU``, ``8 GPUs``, ``16 GPUs (2 nodes x 8)``."""
        gpus = f"{self.world} GPU{'s' if self.world > 1 else ''}"
        return f"{gpus} ({self.nodes} nodes x {self.per_node})" if self.nodes > 1 else gpus

    def forward_share(self, batch: int | None, chunk: int | None) -> float:
        """The share of a ``batch``'s backbone forwards the busiest rank makes, forwarding whole
        chunks of ``chunk`` images (``ownership.row_bounds``): ``1 / W`` where the chunks divide
        evenly; a batch of fewer chunks than ranks leaves some ranks idle. Unknown batch: ``1 / W``."""
        if batch is None or chunk is None or batch < 1:
            return 1 / self.world
        bounds = row_bounds(batch, chunk, self.world)
        return max(high - low for low, high in zip(bounds, bounds[1:])) / batch

    def set_share(self, sets: int) -> float:
        """The share of a cell's head FLOPs the busiest rank computes: its owned layer sets' (each
        trains on the whole global batch), ``most_sets_per_rank(L, W) / L``."""
        return most_sets_per_rank(sets, self.world) / sets if sets else 1.0

    def link_seconds(self, sent_bytes: float) -> float:
        """Time one rank takes to send ``sent_bytes`` spread evenly over the other ranks: the share
        bound for its own node over NVLink, the rest over the network (one after the other: no
        overlap assumed)."""
        if self.world == 1:
            return 0.0
        peers = self.world - 1
        local = self.per_node - 1
        return sent_bytes * (local / INTRA_NODE_BYTES_PER_SECOND + (peers - local) / INTER_NODE_BYTES_PER_SECOND) / peers

    def link_description(self) -> str:
        """The bandwidths a plan assumed, for its footnote."""
        within = f"{INTRA_NODE_BYTES_PER_SECOND / 1e9:g} GB/s a rank within a node (NVLink 4)"
        across = f", {INTER_NODE_BYTES_PER_SECOND / 1e9:g} GB/s across nodes (a 200 Gb/s NIC per GPU)" if self.nodes > 1 else ""
        return within + across
