"""Successive halving of a linear probe's grid, per layer set, on val only.

Training every (token kind x lr x wd) head of every layer set for the whole schedule is what makes
a layer-wise sweep cost far more than one head: at ImageNet shape (1000 classes, width 1536, 26
layer sets, 18 grid points) the heads cost several backbone forwards per image. Halving keeps the
sweep's promise (every layer set gets a val-selected head trained to the end) for a fraction of
that: at fixed points of the schedule (``RUNGS``, fractions of all optimizer steps) each layer set
keeps the better half of its still-training heads by val score (ties to the first in grid order)
and the others stop there. A survivor's trajectory is exactly the full grid's (heads are
independent: zero init, the same seeded batches, per-head clipping), so whenever the full grid's
winner survives every rung, halving selects the very same head with the very same numbers; a
head stopped early is recorded with the val score it had and where it stopped, never with a test
score.

It is opt-in (``grid_search = "halving"``, ``--grid-search halving``); the shipped protocols keep
``full``. The val loss a head has early in a warmup-and-cosine schedule is a weak guide to where it
ends: high learning rates look worst before the schedule anneals them. Measured on digits
(vit-tiny-cls, vit-tiny-reg, aim-tiny, random init, the aim-v1 grid), halving trained a fifth of the
head-steps but its best test score fell 1.3 to 2.3 points short of the full grid's, above the
0.3-point tolerance numbers need; rungs at 1/4 and 1/2 only still lost up to 3 points on some layers.
Ranking by the val loss or accuracy of iterate averages instead, or halving harder (a quarter kept
at 1/16 and 1/4), did worse (up to 0.7 and 1.7 points). A larger val split does not make it safe:
``benchmarks/halving_val_size.py`` replays halving exactly from full-grid runs on Fashion-MNIST at
val sizes from 100 to 8,000. On pixel features it keeps the full grid's head; on every layer of
random-init tiny ViTs, whose heads are still far from converged after 100 epochs, the winner is a
high learning rate that looks worst at 1/16 of the schedule, and halving loses 3.5 to 3.8 points on
average at 8,000 val images (2.6 to 3.0 at 100), so no "halving above K val examples" rule recovers
the full grid's numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

RUNGS = (1 / 16, 1 / 8, 1 / 4, 1 / 2)  # of all optimizer steps: where each layer set halves its heads


def rung_steps(total_steps: int) -> list[int]:
    """The optimizer steps after which the grid halves (distinct, at least 1, before the last step)."""
    return sorted({max(1, round(total_steps * fraction)) for fraction in RUNGS} - {total_steps}) if total_steps > 1 else []


def survivors(groups: Sequence[Sequence[int]], scores: Sequence[float]) -> set[int]:
    """Of each group (a layer set's still-training heads, as indices into ``scores`` in grid order),
    the better ceil(half) by score; ties go to the earlier in grid order."""
    kept: set[int] = set()
    for group in groups:
        ranked = sorted(group, key=lambda index: (-scores[index], group.index(index)))
        kept.update(ranked[: math.ceil(len(group) / 2)])
    return kept


def active_share(total_steps: int, heads_per_set: int) -> float:
    """The mean share of a layer set's heads still training over the schedule (1.0 for the full grid)."""
    if total_steps < 1 or heads_per_set < 1:
        return 1.0
    bounds = [0, *rung_steps(total_steps), total_steps]
    alive, spent = heads_per_set, 0.0
    for start, end in zip(bounds, bounds[1:]):
        spent += alive * (end - start)
        alive = math.ceil(alive / 2)
    return spent / (heads_per_set * total_steps)
