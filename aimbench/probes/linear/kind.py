"""The linear probe as a kind: BatchNorm + linear heads on pooled features, the lr x wd grid trained together."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aimbench.probes.kinds import FLOAT, CacheNeed, Exchange, PlanShape, ProbeKind, held_bytes, sent_bytes
from aimbench.probes.linear.config import LinearProbeConfig
from aimbench.probes.linear.halving import active_share

if TYPE_CHECKING:
    from aimbench.probes.job import ProbeJob, ProbeOutcome

TRAIN_STEP = 2  # FLOPs of a training step over a forward's: the forward and the weight gradient (the features are frozen)
TENSORS = 2  # fp32 tensors per parameter besides the optimizer's state: the weight and its gradient


def linear_head_flops(inputs: int, classes: int) -> int:
    """Forward FLOPs of linear heads over ``inputs`` feature values in all (their widths summed) for one image."""
    return 2 * inputs * classes


class LinearKind(ProbeKind[LinearProbeConfig]):
    name = "linear"
    config_class = LinearProbeConfig

    def run(self, job: ProbeJob) -> ProbeOutcome:
        from aimbench.probes.linear.run import run_linear

        return run_linear(job)

    def forwards(self, config: LinearProbeConfig, shape: PlanShape) -> int:
        once = sum(shape.sizes.values())  # eval crops of every split, once (cached)
        return once + config.training_images(shape.sizes["train"]) if config.data_mode == "online" else once

    def head_flops(self, config: LinearProbeConfig, shape: PlanShape) -> float:
        points = len(config.learning_rates) * len(config.weight_decays)
        per_image = points * linear_head_flops(shape.pooled_width(config.token_kinds), shape.classes)
        training: float = TRAIN_STEP * config.training_images(shape.sizes["train"])
        if config.grid_search == "halving":  # the share of head-steps successive halving keeps training
            heads_per_set = points * len(shape.columns(config.token_kinds))
            training *= active_share(config.total_steps(shape.sizes["train"]), heads_per_set)
        return round(per_image * (training + shape.evaluated))

    def head_memory_bytes(self, config: LinearProbeConfig, shape: PlanShape, world: int = 1) -> int:
        """The heads of the layer sets the busiest rank owns: weights and biases with their gradients and optimizer states."""
        shape = shape.owned(world)
        points = len(config.learning_rates) * len(config.weight_decays)
        heads = points * len(shape.layer_sets) * len(shape.columns(config.token_kinds))
        parameters = points * shape.pooled_width(config.token_kinds) * shape.classes + heads * shape.classes  # weights and biases
        return (TENSORS + config.optimizer_states) * FLOAT * parameters

    def exchange(self, config: LinearProbeConfig, shape: PlanShape, world: int) -> Exchange:
        """Each image's pooled vectors of every layer set and token kind read (``PlanShape.pooled_values``,
        float32) go to the sets' owners (``sent_bytes``): the cached eval-crop features of every
        split gathered once (statistics, val and test; cached probes train on them too), and online,
        every training step's augmented views."""
        per_image = FLOAT * shape.pooled_values(config.token_kinds)
        online = config.data_mode == "online"
        images = sum(shape.sizes.values()) + (config.training_images(shape.sizes["train"]) if online else 0)
        step = sent_bytes(per_image, config.batch_size, world) if online else 0
        return Exchange(step, sent_bytes(per_image, images, world), held_bytes(per_image, config.batch_size, world) if online else 0)

    def cache_blocks(self, config: LinearProbeConfig, shape: PlanShape) -> CacheNeed:
        return CacheNeed(pooled=frozenset(shape.blocks))  # online probes too: eval-crop features give stats, val and test

    def head_dtype(self, config: LinearProbeConfig, dtype: str) -> str:
        return "bf16" if config.head_precision == "bf16" else dtype


LINEAR = LinearKind()
