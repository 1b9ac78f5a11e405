"""Pass planning for attentive heads under a memory budget: the heads a rank owns, and what it holds of a batch."""

from __future__ import annotations

import pytest

from aimbench.errors import UserError
from aimbench.probes.attentive.memory import TokenLayout, batch_tokens_bytes, bytes_per_layer_set, plan_passes
from aimbench.probes.features.layer_sets import parse_layer_sets

WINDOWS = {"last": (4, 5), "best": (2, 3)}


def test_a_sets_heads_count_their_states_activations_and_one_micro_batch_of_tokens() -> None:
    # dim 4, 3 tokens, 2 classes, 1 grid point, micro-batch 1, 2 heads: params 2*16+4+8+2 = 46
    assert bytes_per_layer_set(4, 3, 2, 1, 1, heads=2) == 4 * (4 * 46 + 2 * 1 * 2 * (3 + 4)) + 6 * 1 * 3 * 4
    assert bytes_per_layer_set(8, 3, 2, 2, 4) > bytes_per_layer_set(8, 3, 2, 1, 4) > bytes_per_layer_set(8, 3, 2, 1, 2)


def test_a_rank_holds_its_rows_of_every_set_and_the_block_outputs_no_set_takes_over() -> None:
    sets = parse_layer_sets("all,last,best", 6, WINDOWS)  # 6 blocks, each a set of its own, and two windows
    per_row = 4 * 3 * 8  # fp32 tokens of one row of one set: 3 tokens x width 8
    one_chunk = TokenLayout.of(batch=32, chunk=16, world=2)  # 16 rows a rank: one forward
    assert one_chunk.rows == 16
    assert batch_tokens_bytes(sets, 4, 3, 8, one_chunk) == 8 * 16 * per_row  # every block output is a set's own tensor
    two_chunks = TokenLayout.of(batch=64, chunk=16, world=2)  # 32 rows: a second chunk is written into the first's
    assert batch_tokens_bytes(sets, 4, 3, 8, two_chunks) == 8 * 32 * per_row + 6 * 16 * per_row
    bf16 = TokenLayout.of(batch=32, chunk=16, world=2, value_bytes=2)  # outputs are copied to fp32: they are held beside
    assert batch_tokens_bytes(sets, 4, 3, 8, bf16) == 8 * 16 * per_row + 6 * 16 * per_row // 2
    cls = TokenLayout.of(batch=32, chunk=16, world=2, prefix_tokens=1)  # patches are a slice of each output: copied
    assert batch_tokens_bytes(sets, 4, 3, 8, cls) == 8 * 16 * per_row + 6 * 16 * 4 * 4 * 8
    windows_only = parse_layer_sets("last,best", 6, WINDOWS)  # no set takes a block's tensor
    assert batch_tokens_bytes(windows_only, 1, 3, 8, one_chunk) == 2 * 16 * per_row + 4 * 16 * per_row
    cached = TokenLayout.of(batch=32, chunk=16, world=2, cached=True)  # the owned sets' rows of the whole batch, from the cache
    assert batch_tokens_bytes(sets, 4, 3, 8, cached) == 4 * 32 * per_row
    assert TokenLayout.of(batch=32, chunk=16, world=1).rows == 32  # alone: every row
    assert TokenLayout.of(batch=32, chunk=16, world=4).rows == 16  # two ranks idle, but each scores a chunk of val at a time


def test_sets_are_split_into_balanced_passes_that_fit() -> None:
    sets = parse_layer_sets("all", 32)
    layout = TokenLayout.of(batch=32, chunk=32, world=1)
    per, tokens = bytes_per_layer_set(64, 16, 10, 5, 32), 4 * 32 * 16 * 64  # a set's heads, and its tokens of a batch
    assert len(plan_passes(sets, 64, 16, 10, 5, layout, None, 32).passes) == 1
    plan = plan_passes(sets, 64, 16, 10, 5, layout, (per + tokens) * 10, 32)
    assert [len(p) for p in plan.passes] == [8, 8, 8, 8]  # 4 passes, balanced, each <= 10 sets
    assert [s for p in plan.passes for s in p] == sets
    assert "32 layer sets in 4 pass(es)" in plan.describe() and plan.batch_bytes == 8 * tokens
    assert len(plan_passes(sets, 64, 16, 10, 5, layout, (per + tokens) * 32, 32).passes) == 1
    with pytest.raises(UserError, match="lower the batch size"):
        plan_passes(sets, 64, 16, 10, 5, layout, per + tokens - 1, 32)


def test_ranks_that_cannot_each_own_a_set_in_every_pass_are_refused() -> None:
    sets = parse_layer_sets("all", 4)
    layout = TokenLayout.of(batch=32, chunk=16, world=2)
    per = bytes_per_layer_set(64, 16, 10, 5, 16)
    assert len(plan_passes(sets, 64, 16, 10, 5, layout, 10 * per, 16, world=2).passes) == 1
    with pytest.raises(UserError, match="every rank must own a set in every pass"):
        plan_passes(sets, 64, 16, 10, 5, layout, per + 2 * 16 * 16 * 64 * 4 - 1, 16, world=2)  # fits a pass of one set only


def test_aim_7b_all_blocks_on_an_80gb_gpu_needs_several_passes() -> None:
    """32 blocks of 4096-wide tokens (256 patches), 1000 classes, 5 lrs x 1 wd at batch 512, alone
    on 80 GB: every row of a pass's sets' tokens (4.3 GB a set at batch 1,024) and their heads."""
    layout = TokenLayout.of(batch=512, chunk=64, world=1)
    plan = plan_passes(parse_layer_sets("all", 32), 4096, 256, 1000, 5, layout, 80 * 10**9, micro_batch=64, heads=32)
    assert 1 < len(plan.passes) <= 4
    assert plan.bytes_per_set * max(len(p) for p in plan.passes) + plan.batch_bytes <= 80 * 10**9
