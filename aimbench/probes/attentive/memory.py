"""Planning attentive-probe passes to fit a memory budget.

All heads of one pass live on the device together: per head its parameters with their gradient
and two AdamW moments, per layer set the batch's tokens and their normalised copy, and per head
the activations a training micro-batch keeps for backward (attention weights over the tokens and
the attention-weighted token mix of every attention head, and their gradients; the heads project
the query instead of every token, see ``attentive_grid``, so no per-head (N, D) tensor exists). When everything does not
fit, layer sets are split into consecutive chunks, each trained in its own pass over the data
(one more backbone forward per image per epoch each); the plan says how many passes it takes.
The estimate is deliberately simple and conservative (fp32 everywhere); its terms are documented
so a user can see why a plan needs the passes it does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from aimbench.errors import UserError
from aimbench.probes.features.layer_sets import LayerSet
from aimbench.probes.ownership import most_sets_per_rank, split_evenly

FLOAT = 4  # bytes
HEADS_SHARE = 0.9  # of the device memory left beside the backbone: what the heads may take (the rest: allocator, batches)


@dataclass(frozen=True)
class PassPlan:
    passes: list[list[LayerSet]]
    bytes_per_set: int
    budget_bytes: int | None

    def describe(self) -> str:
        sets = sum(len(p) for p in self.passes)
        per = f"{self.bytes_per_set / 2**30:.2f} GiB per layer set"
        budget = "no budget" if self.budget_bytes is None else f"budget {self.budget_bytes / 2**30:.1f} GiB"
        return f"{sets} layer sets in {len(self.passes)} pass(es) ({per}, {budget})"


def bytes_per_layer_set(
    dim: int, tokens: int, classes: int, grid_points: int, batch: int, micro_batch: int | None = None, heads: int = 1
) -> int:
    """Device memory one layer set's heads need during training (all its grid points)."""
    micro = min(batch, micro_batch or batch)
    params = grid_points * (2 * dim * dim + dim + classes * dim + classes)
    states = 4 * params  # weights, gradients, AdamW first and second moments
    # the set's tokens, and as many values again: alone, the normalisation of a set (written over its tokens); with
    # several ranks, this rank's rows of every set, which it holds while the owners' tokens arrive (sharding.to_owners)
    inputs = 2 * batch * tokens * dim
    activations = grid_points * 2 * micro * heads * (tokens + dim)  # attention and token mix, and their gradients
    return FLOAT * (states + inputs + activations)


def plan_passes(
    sets: Sequence[LayerSet], dim: int, tokens: int, classes: int, grid_points: int, batch: int, budget_bytes: int | None,
    micro_batch: int | None = None, heads: int = 1, world: int = 1,
) -> PassPlan:  # fmt: skip
    """Consecutive chunks of ``sets`` whose heads fit ``budget_bytes`` (None: one pass) on each of
    ``world`` ranks: a pass's sets are divided among the ranks (``ownership.set_bounds``), so a rank
    holds at most ``most_sets_per_rank(len(chunk), world)`` sets' heads at once."""
    per_set = bytes_per_layer_set(dim, tokens, classes, grid_points, batch, micro_batch, heads)
    if budget_bytes is None or not sets:
        return PassPlan([list(sets)], per_set, budget_bytes)
    fit = budget_bytes // per_set
    if fit < 1:
        raise UserError(
            f"one layer set's attentive heads need {per_set / 2**30:.1f} GiB but the memory budget is "
            f"{budget_bytes / 2**30:.1f} GiB; lower the batch size, the micro-batch or the lr x wd grid"
        )
    passes = math.ceil(most_sets_per_rank(len(sets), world) / fit)
    if world > 1 and passes > len(sets) // world:  # a pass of fewer sets than ranks would leave a rank without heads
        raise UserError(
            f"the attentive heads of {len(sets)} layer sets need {passes} passes on {world} ranks "
            f"({per_set / 2**30:.1f} GiB a set, budget {budget_bytes / 2**30:.1f} GiB a rank), and every rank must own a set in every pass: "
            f"use more GPUs (each holds {fit} set(s)), --dtype bf16, or one GPU, which trains them in passes"
        )
    bounds = split_evenly(len(sets), passes)  # balanced chunks
    return PassPlan([list(sets[a:b]) for a, b in zip(bounds, bounds[1:])], per_set, budget_bytes)
