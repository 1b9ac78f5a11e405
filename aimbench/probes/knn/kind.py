"""The kNN probe as a kind: weighted cosine kNN on cached pooled features; nothing is trained."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aimbench.probes.kinds import FLOAT, CacheNeed, Exchange, PlanShape, ProbeKind, sent_bytes
from aimbench.probes.knn.config import KnnProbeConfig

if TYPE_CHECKING:
    from aimbench.probes.job import ProbeJob, ProbeOutcome


class KnnKind(ProbeKind[KnnProbeConfig]):
    name = "knn"
    config_class = KnnProbeConfig

    def run(self, job: ProbeJob) -> ProbeOutcome:
        from aimbench.probes.knn.run import run_knn

        return run_knn(job)

    def forwards(self, config: KnnProbeConfig, shape: PlanShape) -> int:
        return sum(shape.sizes.values())  # every split's eval crops, once

    def head_flops(self, config: KnnProbeConfig, shape: PlanShape) -> float:
        return 2 * shape.pooled_width() * shape.sizes["train"] * shape.evaluated  # each val and test image against every train image

    def head_memory_bytes(self, config: KnnProbeConfig, shape: PlanShape, world: int = 1) -> int:
        # one head input at a time: the train features searched and the val or test queries, on the device (as many on any rank)
        return FLOAT * shape.widest_input * (shape.sizes["train"] + max(shape.sizes["val"], shape.sizes["test"]))

    def exchange(self, config: KnnProbeConfig, shape: PlanShape, world: int) -> Exchange:
        """The cached pooled features of every split gathered once by the sets' owners (``sent_bytes``); no step moves anything."""
        return Exchange(total_bytes=sent_bytes(FLOAT * shape.pooled_values(), sum(shape.sizes.values()), world))

    def cache_blocks(self, config: KnnProbeConfig, shape: PlanShape) -> CacheNeed:
        return CacheNeed(pooled=frozenset(shape.blocks))


KNN = KnnKind()
