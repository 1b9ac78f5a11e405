"""Pass planning for attentive heads under a memory budget."""

from __future__ import annotations

import pytest

from aimbench.errors import UserError
from aimbench.probes.attentive.memory import bytes_per_layer_set, plan_passes
from aimbench.probes.features.layer_sets import parse_layer_sets


def test_estimate_counts_parameters_states_and_activations() -> None:
    # dim 4, 3 tokens, 2 classes, 1 grid point, batch 1, 2 heads: params 2*16+4+8+2 = 46
    assert bytes_per_layer_set(4, 3, 2, 1, 1, heads=2) == 4 * (4 * 46 + 2 * 3 * 4 + 2 * 1 * 2 * (3 + 4))
    assert bytes_per_layer_set(8, 3, 2, 2, 4) > bytes_per_layer_set(8, 3, 2, 1, 4) > bytes_per_layer_set(8, 3, 2, 1, 2)


def test_sets_are_split_into_balanced_passes_that_fit() -> None:
    sets = parse_layer_sets("all", 32)
    per = bytes_per_layer_set(64, 16, 10, 5, 32)
    assert len(plan_passes(sets, 64, 16, 10, 5, 32, None).passes) == 1
    plan = plan_passes(sets, 64, 16, 10, 5, 32, budget_bytes=per * 10)
    assert [len(p) for p in plan.passes] == [8, 8, 8, 8]  # 4 passes, balanced, each <= 10 sets
    assert [s for p in plan.passes for s in p] == sets
    assert "32 layer sets in 4 pass(es)" in plan.describe()
    assert len(plan_passes(sets, 64, 16, 10, 5, 32, budget_bytes=per * 32).passes) == 1
    with pytest.raises(UserError, match="lower the batch size"):
        plan_passes(sets, 64, 16, 10, 5, 32, budget_bytes=per - 1)


def test_aim_7b_all_blocks_on_an_80gb_gpu_needs_several_passes() -> None:
    """The issue's example: 32 blocks of 4096-wide tokens (256 patches), 1000 classes, the default
    grid (5 lrs x 1 wd) at batch 512, on 80 GB."""
    plan = plan_passes(parse_layer_sets("all", 32), 4096, 256, 1000, 5, 512, budget_bytes=80 * 10**9, micro_batch=64, heads=32)
    assert 1 < len(plan.passes) <= 4  # weights + AdamW states ~3 GB and a 512-batch of tokens ~4 GB per set
    assert plan.bytes_per_set * max(len(p) for p in plan.passes) <= 80 * 10**9
