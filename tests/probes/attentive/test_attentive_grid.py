"""Batched attentive heads: each head of a grid computes exactly what a standalone AIM head does."""

from __future__ import annotations

import torch

from aimbench.probes.attentive.batch_stats import batch_moments, normalise_
from aimbench.probes.attentive.grid import AttentiveGrid, SetNorms, standalone_head
from aimbench.probes.ownership import Shard
from aimbench.probes.schedule import head_seed

DIM, HEADS, CLASSES = 16, 2, 5


def _tokens(sets: int = 3, batch: int = 4, n: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(sets, batch, n, DIM, generator=torch.Generator().manual_seed(seed)) * 2 + 1


def test_grid_heads_equal_standalone_heads_forward_and_gradient() -> None:
    seeds = [head_seed(0, name, 1e-3, 0.1) for name in ("0", "1", "avg:0-1")]
    grid, norms = AttentiveGrid(seeds, DIM, CLASSES, HEADS), SetNorms(3, DIM)
    alone = [standalone_head(seed, DIM, CLASSES, HEADS) for seed in seeds]
    tokens = _tokens()
    labels = torch.tensor([0, 1, 2, 3])

    grid_logits = grid(norms(tokens))  # training mode: batch statistics
    alone_logits = [head(x) for head, x in zip(alone, tokens)]
    torch.testing.assert_close(grid_logits, torch.stack(alone_logits), atol=1e-5, rtol=1e-5)

    torch.nn.functional.cross_entropy(grid_logits.reshape(-1, CLASSES), labels.repeat(3), reduction="sum").backward()
    for i, head in enumerate(alone):
        torch.nn.functional.cross_entropy(alone_logits[i], labels, reduction="sum").backward()
        torch.testing.assert_close(grid.k.grad[i], head.k.weight.grad, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(grid.cls_token.grad[i], head.cls_token.grad.reshape(DIM), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(grid.bias.grad[i], head.linear.bias.grad, atol=1e-5, rtol=1e-5)
        # running statistics of the shared norm equal the head's own
        torch.testing.assert_close(norms.norms[i].running_mean, head.bn.running_mean)


def test_exported_head_reproduces_the_grid_in_eval_mode() -> None:
    grid, norms = AttentiveGrid([1, 2], DIM, CLASSES, HEADS), SetNorms(2, DIM)
    for _ in range(3):
        norms(_tokens(2, seed=_))  # accumulate running statistics
    norms.eval()
    tokens = _tokens(2, seed=9)
    with torch.no_grad():
        expected = grid(norms(tokens))
        for i in range(2):
            torch.testing.assert_close(grid.head(i, norms.norms[i])(tokens[i]), expected[i], atol=1e-5, rtol=1e-5)


def test_head_seed_depends_on_the_head_only() -> None:
    assert head_seed(0, "3", 1e-3, 0.1) == head_seed(0, "3", 1e-3, 0.1)
    assert len({head_seed(0, "3", 1e-3, 0.1), head_seed(1, "3", 1e-3, 0.1), head_seed(0, "4", 1e-3, 0.1),
                head_seed(0, "3", 3e-3, 0.1), head_seed(0, "3", 1e-3, 0.05)}) == 5  # fmt: skip


def test_batch_moments_normalise_and_track_as_batchnorm_does() -> None:
    """A batch normalised from chunk moments (``batch_stats``), running statistics folded in by
    ``SetNorms.track_``: what ``BatchNorm1d`` in training mode gives, over several steps."""
    norms, reference = SetNorms(3, DIM), SetNorms(3, DIM)
    for step in range(3):
        tokens = _tokens(batch=7, seed=step) * (step + 1)
        expected = reference(tokens)  # training mode: batch statistics, running statistics updated
        mean, var, count = batch_moments(tokens, Shard(chunk=3), rows=7)
        normalise_(tokens, mean, var)  # in place
        torch.testing.assert_close(tokens, expected, rtol=1e-5, atol=1e-5)
        norms.track_(mean, var, count)
        for mine, theirs in zip(norms.norms, reference.norms):
            torch.testing.assert_close(mine.running_mean, theirs.running_mean)
            torch.testing.assert_close(mine.running_var, theirs.running_var)
            assert int(mine.num_batches_tracked) == int(theirs.num_batches_tracked) == step + 1
