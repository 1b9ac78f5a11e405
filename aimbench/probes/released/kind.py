"""Released heads as a kind (``--probe official:<head>``): a published head applied as it is, on
its own layer window; nothing is trained, cached or selected, so it follows no protocol."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aimbench.probes.attentive.kind import attentive_head_flops
from aimbench.probes.kinds import FLOAT, OFFICIAL, PlanShape, ProbeKind

if TYPE_CHECKING:
    from aimbench.probes.job import ProbeJob, ProbeOutcome


class ReleasedKind(ProbeKind[None]):
    name = OFFICIAL
    config_class = None

    def run(self, job: ProbeJob) -> ProbeOutcome:
        from aimbench.probes.released.run import run_released

        return run_released(job)

    def forwards(self, config: None, shape: PlanShape) -> int:
        return shape.evaluated  # val and test through the backbone and the head

    def head_flops(self, config: None, shape: PlanShape) -> float:
        return attentive_head_flops(shape.patch_tokens, shape.dim, shape.attention_heads, shape.classes) * shape.evaluated

    def head_memory_bytes(self, config: None, shape: PlanShape, world: int = 1) -> int:
        return FLOAT * (2 * shape.dim**2 + shape.dim + shape.classes * shape.dim + shape.classes)  # one head's weights


RELEASED = ReleasedKind()
