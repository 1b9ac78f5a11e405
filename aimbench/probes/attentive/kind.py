"""The attentive probe as a kind: AIM's attentive pooling heads on patch tokens, every layer set x
lr x wd trained together from one backbone pass per batch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aimbench.probes.attentive.config import AttentiveProbeConfig
from aimbench.probes.attentive.memory import TokenLayout, batch_tokens_bytes, bytes_per_layer_set, plan_passes
from aimbench.probes.kinds import FLOAT, CacheNeed, Exchange, PlanShape, ProbeKind, sent_bytes
from aimbench.probes.ownership import most_sets_per_rank

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

    def head_memory_bytes(self, config: AttentiveProbeConfig, shape: PlanShape, world: int = 1) -> int:
        """The sets the busiest rank owns, each set's heads as ``bytes_per_layer_set`` counts them
        (its batch tokens: ``exchange``'s buffer)."""
        return self._per_set(config, shape) * most_sets_per_rank(len(shape.layer_sets), world)  # the run splits them into passes

    def least_head_memory_bytes(self, config: AttentiveProbeConfig, shape: PlanShape, world: int = 1) -> int:
        return self._per_set(config, shape) if shape.layer_sets else 0  # one layer set's heads: a pass's least, at any world size

    def passes(self, config: AttentiveProbeConfig, shape: PlanShape, budget_bytes: int | None, world: int = 1) -> int:
        """As the run splits them (``plan_passes``, the same estimate, each pass's sets divided among
        the ``world`` ranks): one layer set that does not fit is refused here."""
        points = len(config.learning_rates) * len(config.weight_decays)
        plan = plan_passes(shape.layer_sets, shape.dim, shape.patch_tokens, shape.classes, points, self._layout(config, shape, world),
                           budget_bytes, config.micro_batch, shape.attention_heads, world=world)  # fmt: skip
        return len(plan.passes)

    def exchange(self, config: AttentiveProbeConfig, shape: PlanShape, world: int) -> Exchange:
        """Each image's patch tokens of every layer set, (L, N, D) float32, go to the sets' owners
        (``sent_bytes``): online, every training step's global batch and every val and test batch;
        cached, the token maps of every split gathered once, and no step moves anything. The
        buffer is what a rank holds of a batch's tokens beside its heads (``batch_tokens_bytes``),
        on one rank too."""
        per_image = FLOAT * len(shape.layer_sets) * shape.patch_tokens * shape.dim
        if config.data_mode == "online":
            images = config.epochs * shape.sizes["train"] + shape.evaluated
            step = sent_bytes(per_image, config.batch_size, world)
        else:
            images, step = sum(shape.sizes.values()), 0
        owned = most_sets_per_rank(len(shape.layer_sets), world)
        held = batch_tokens_bytes(shape.layer_sets, owned, shape.patch_tokens, shape.dim, self._layout(config, shape, world))
        return Exchange(step, sent_bytes(per_image, images, world), held)

    @staticmethod
    def _layout(config: AttentiveProbeConfig, shape: PlanShape, world: int) -> TokenLayout:
        return TokenLayout.of(config.batch_size, shape.chunk, world, shape.value_bytes, shape.prefix_tokens, config.data_mode == "cached")

    def _per_set(self, config: AttentiveProbeConfig, shape: PlanShape) -> int:
        points = len(config.learning_rates) * len(config.weight_decays)
        return bytes_per_layer_set(shape.dim, shape.patch_tokens, shape.classes, points, config.micro_batch, shape.attention_heads)

    def cache_blocks(self, config: AttentiveProbeConfig, shape: PlanShape) -> CacheNeed:
        return CacheNeed(tokens=frozenset(shape.blocks if config.data_mode == "cached" else ()))


ATTENTIVE = AttentiveKind()
