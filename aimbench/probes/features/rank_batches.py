"""Batches as one rank of a cell sees them: its rows of each global batch, forwarded in fixed chunks.

Online probes draw global batches (the recipe's batch, in the epoch's seeded order) and every rank
loads and forwards only its rows (``ownership.row_bounds``: whole chunks of ``--batch-size``
images). Each chunk is one backbone forward, at any world size, so an image's features never
depend on how many ranks there are; a rank alone forwards a batch of 1,024 as 16 chunks of 64,
which is also what bounds the backbone's activation memory. A rank whose share of a short last
batch is empty loads nothing and contributes an empty tensor to the exchange.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from aimbench.errors import one_line_worker_errors
from aimbench.probes.ownership import Shard


def rank_loader(
    dataset: Dataset, order: Sequence[Sequence[int]], shard: Shard, workers: int
) -> Iterator[tuple[Sequence[int], torch.Tensor | None]]:
    """Each global batch of ``order`` (dataset positions) with this rank's rows of it loaded (None:
    it has none); one DataLoader for the whole order, so workers prefetch across batches."""
    mine: list[list[int]] = []
    for batch in order:
        share = shard.rows(len(batch))
        mine.append(list(batch[share.start : share.stop]))
    loaded = iter(one_line_worker_errors(DataLoader(dataset, batch_sampler=[rows for rows in mine if rows], num_workers=workers)))
    for batch, rows in zip(order, mine):
        yield batch, (next(loaded)[0] if rows else None)


def in_chunks(forward: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor | None, chunk: int,
              empty: Callable[[], torch.Tensor], dim: int = 0) -> torch.Tensor:  # fmt: skip
    """``forward`` on ``images`` one chunk of ``chunk`` images at a time, concatenated along ``dim``
    (``empty()``: the result for no images)."""
    if images is None or not len(images):
        return empty()
    return torch.cat([forward(images[start : start + chunk]) for start in range(0, len(images), chunk)], dim=dim)


def consecutive(count: int, size: int) -> list[list[int]]:
    """Positions 0..count-1 in batches of ``size``, in order: evaluation's global batches."""
    return [list(range(start, min(start + size, count))) for start in range(0, count, size)]
