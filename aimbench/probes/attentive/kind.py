"""The attentive probe as a kind: AIM's attentive pooling heads on patch tokens, every layer set x
lr x wd trained together from one backbone pass per batch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aimbench.probes.attentive.config import AttentiveProbeConfig
from aimbench.probes.attentive.memory import bytes_per_layer_set, plan_passes
from aimbench.probes.kinds import CacheNeed, PlanShape, ProbeKind

if TYPE_CHECKING:
    from aimbench.probes.job import ProbeJob, ProbeOutcome

TRAIN_STEP = 3  # FLOPs of a training step over a forward's: the forward, and a backward of twice its cost


def attentive_head_flops(patch_tokens: int, dim: int, heads: int, classes: int) -> int:
    """Forward FLOPs of one AIM attentive head on one image, as ``AttentiveGrid.forward`` computes it:
    the learned query moved into token space, so per attention head the scores and the weighted sum
    of the N tokens cost 2 N D each (4 h N D in all), then the value projection of the pooled token
    (2 D^2 over all heads) and the classifier (2 D C)."""
    return 4 * heads * patch_tokens * dim + 2 * dim**2 + 2 * dim * classes


class AttentiveKind(ProbeKind[AttentiveProbeConfig]):
    name = "attentive"
    config_class = AttentiveProbeConfig

    def run(self, job: ProbeJob) -> ProbeOutcome:
        from aimbench.probes.attentive.run import run_attentive

        return run_attentive(job)

    def forwards(self, config: AttentiveProbeConfig, shape: PlanShape) -> int:
        if config.data_mode == "online":  # augmented views each epoch, then val and test (no eval-crop train pass)
            return config.epochs * shape.sizes["train"] + shape.evaluated
        return sum(shape.sizes.values())  # token maps of every split, once

    def head_flops(self, config: AttentiveProbeConfig, shape: PlanShape) -> float:
        per_image = len(shape.layer_sets) * len(config.learning_rates) * len(config.weight_decays)
        per_image *= attentive_head_flops(shape.patch_tokens, shape.dim, shape.attention_heads, shape.classes)
        return per_image * (TRAIN_STEP * config.epochs * shape.sizes["train"] + shape.evaluated)

    def head_memory_bytes(self, config: AttentiveProbeConfig, shape: PlanShape) -> int:
        points = len(config.learning_rates) * len(config.weight_decays)
        per_set = bytes_per_layer_set(shape.dim, shape.patch_tokens, shape.classes, points, config.batch_size, config.micro_batch,
                                      shape.attention_heads)  # fmt: skip
        return per_set * len(shape.layer_sets)  # all in one pass; the run splits them into passes when they do not fit

    def least_head_memory_bytes(self, config: AttentiveProbeConfig, shape: PlanShape) -> int:
        return self.head_memory_bytes(config, shape) // max(1, len(shape.layer_sets))  # one layer set's heads: a pass's least

    def passes(self, config: AttentiveProbeConfig, shape: PlanShape, budget_bytes: int | None) -> int:
        """As the run splits them (``plan_passes``, the same estimate): one layer set that does not fit is refused here."""
        points = len(config.learning_rates) * len(config.weight_decays)
        plan = plan_passes(shape.layer_sets, shape.dim, shape.patch_tokens, shape.classes, points, config.batch_size, budget_bytes,
                           config.micro_batch, shape.attention_heads)  # fmt: skip
        return len(plan.passes)

    def cache_blocks(self, config: AttentiveProbeConfig, shape: PlanShape) -> CacheNeed:
        return CacheNeed(tokens=frozenset(shape.blocks if config.data_mode == "cached" else ()))


ATTENTIVE = AttentiveKind()
