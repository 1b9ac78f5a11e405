"""Planning attentive-probe passes to fit a memory budget.

A rank's device memory while the attentive heads train, beside the backbone, has two parts:

* per layer set it owns (:func:`bytes_per_layer_set`): its heads' parameters with their gradients
  and two AdamW moments (every grid point), the micro-batch window of the set's tokens it receives
  (fp32, and on a GPU the bf16 copy autocast's einsums read), and the activations a micro-batch
  keeps for backward (attention weights over the tokens and the attention-weighted token mix of
  every attention head, and their gradients; the heads project the query instead of every token,
  see ``attentive_grid``, so no per-head (N, D) tensor exists);
* per rank (:func:`batch_tokens_bytes`): its rows of a training batch, every layer set of the pass,
  fp32 (normalised in place, sent to the owners a window at a time: ``tokens``, ``batch_stats``),
  and while it forwards, the block outputs the sets' tokens do not take over.

When everything does not fit, layer sets are split into consecutive chunks, each trained in its
own pass over the data (one more backbone forward per image per epoch each); the plan says how
many passes it takes. The estimate is deliberately simple and conservative (fp32 everywhere but the
backbone's outputs); its terms are documented so a user can see why a plan needs the passes it does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aimbench.errors import UserError
from aimbench.probes.features.layer_sets import LayerSet, blocks_needed
from aimbench.probes.ownership import most_sets_per_rank, row_bounds, split_evenly

FLOAT = 4  # bytes
BF16 = 2
HEADS_SHARE = 0.9  # of the device memory left beside the backbone: what the heads may take (the rest: allocator, batches)


@dataclass(frozen=True)
class TokenLayout:
    """How a rank comes by its training batch's tokens: ``rows`` of each batch, forwarded ``chunk``
    images at a time as outputs of ``value_bytes`` a value with ``prefix_tokens`` (cls, registers)
    before the patches; ``cached``: read from the feature cache instead (every row of the sets
    the rank owns, no forward)."""

    rows: int
    chunk: int
    value_bytes: int = FLOAT
    prefix_tokens: int = 0
    cached: bool = False

    @classmethod
    def of(cls, batch: int, chunk: int, world: int, value_bytes: int = FLOAT, prefix_tokens: int = 0, cached: bool = False) -> TokenLayout:
        """A rank's layout for a global ``batch`` on ``world`` ranks (cached: the whole batch): the
        most rows any rank forwards of a batch, or of an eval group (a chunk each)."""
        bounds = row_bounds(batch, chunk, world)
        rows = batch if cached else max(max(b - a for a, b in zip(bounds, bounds[1:])), min(chunk, batch) if world > 1 else 0)
        return cls(rows, chunk, value_bytes, prefix_tokens, cached)


@dataclass(frozen=True)
class PassPlan:
    passes: list[list[LayerSet]]
    bytes_per_set: int
    budget_bytes: int | None
    batch_bytes: int = 0  # the busiest pass's per-rank tokens of a batch (batch_tokens_bytes)

    def describe(self) -> str:
        sets = sum(len(p) for p in self.passes)
        per = f"{self.bytes_per_set / 2**30:.2f} GiB per layer set, {self.batch_bytes / 2**30:.2f} GiB of batch tokens"
        budget = "no budget" if self.budget_bytes is None else f"budget {self.budget_bytes / 2**30:.1f} GiB"
        return f"{sets} layer sets in {len(self.passes)} pass(es) ({per}, {budget})"


def bytes_per_layer_set(dim: int, tokens: int, classes: int, grid_points: int, micro_batch: int, heads: int = 1) -> int:
    """Device memory one layer set's heads need on the rank that owns them (all its grid points)."""
    params = grid_points * (2 * dim * dim + dim + classes * dim + classes)
    states = 4 * params  # weights, gradients, AdamW first and second moments
    activations = grid_points * 2 * micro_batch * heads * (tokens + dim)  # attention and token mix, and their gradients
    window = micro_batch * tokens * dim  # the set's tokens of one micro-batch, received, and their bf16 copy
    return FLOAT * (states + activations) + (FLOAT + BF16) * window


def batch_tokens_bytes(sets: Sequence[LayerSet], owned: int, tokens: int, dim: int, layout: TokenLayout) -> int:
    """What a rank holds of a training batch beside its heads' memory: its rows of every set's
    tokens in fp32 (cached: every row of the ``owned`` sets), and while it forwards one chunk the
    block outputs no set's tokens take over. A rank forwarding one chunk of fp32 outputs with no
    prefix tokens lets each set of one block keep its block's tensor (``tokens.window_means``), so
    only blocks that only windows read are extra; otherwise every block output of the chunk is."""
    if layout.cached:
        return FLOAT * owned * layout.rows * tokens * dim
    held = FLOAT * len(sets) * layout.rows * tokens * dim
    blocks = blocks_needed(sets)
    if layout.rows <= layout.chunk and layout.value_bytes == FLOAT and layout.prefix_tokens == 0:
        single = {s.blocks[0] for s in sets if len(s.blocks) == 1}
        blocks = [block for block in blocks if block not in single]
    outputs = min(layout.rows, layout.chunk) * (tokens + layout.prefix_tokens) * dim * layout.value_bytes * len(blocks)
    return held + outputs


def _pass_bytes(chunk: Sequence[LayerSet], per_set: int, tokens: int, dim: int, world: int, layout: TokenLayout) -> tuple[int, int]:
    """The busiest rank's (heads, batch tokens) in a pass of ``chunk``."""
    owned = most_sets_per_rank(len(chunk), world)
    return owned * per_set, batch_tokens_bytes(chunk, owned, tokens, dim, layout)


def plan_passes(
    sets: Sequence[LayerSet], dim: int, tokens: int, classes: int, grid_points: int, layout: TokenLayout, budget_bytes: int | None,
    micro_batch: int, heads: int = 1, world: int = 1,
) -> PassPlan:  # fmt: skip
    """The fewest balanced consecutive chunks of ``sets`` whose heads and batch tokens fit
    ``budget_bytes`` (None: one pass) on each of ``world`` ranks: a pass's sets are divided among
    the ranks (``ownership.set_bounds``), so a rank holds at most ``most_sets_per_rank(len(chunk),
    world)`` sets' heads at once, and its rows of the pass's sets' tokens."""
    per_set = bytes_per_layer_set(dim, tokens, classes, grid_points, micro_batch, heads)
    for passes in range(1, max(len(sets), 1) + 1):
        bounds = split_evenly(len(sets), passes)  # balanced chunks
        chunks = [list(sets[a:b]) for a, b in zip(bounds, bounds[1:])]
        needs = [_pass_bytes(chunk, per_set, tokens, dim, world, layout) for chunk in chunks] if sets else [(0, 0)]
        need = max(sum(pair) for pair in needs)  # heads and batch tokens
        if budget_bytes is None or need <= budget_bytes:
            break
    else:
        assert budget_bytes is not None  # no budget fits every plan at its first pass
        raise UserError(
            f"one layer set's attentive heads and batch tokens need {need / 2**30:.1f} GiB but the memory budget is "
            f"{budget_bytes / 2**30:.1f} GiB; lower the batch size, the micro-batch or the lr x wd grid"
        )
    if world > 1 and passes > len(sets) // world:  # a pass of fewer sets than ranks would leave a rank without heads
        raise UserError(
            f"the attentive heads of {len(sets)} layer sets need {passes} passes on {world} ranks "
            f"({per_set / 2**30:.1f} GiB a set, budget {(budget_bytes or 0) / 2**30:.1f} GiB a rank), and every rank must own a set in every pass: "
            f"use more GPUs, --dtype bf16, or one GPU, which trains them in passes"
        )
    return PassPlan(chunks, per_set, budget_bytes, max(batch for _, batch in needs))
