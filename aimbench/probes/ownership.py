"""How one cell's work is divided among the ranks of a world: the rules the run follows and the plan costs.

Two divisions, both chosen so that no number depends on the world size:

* **Images are sharded by chunk.** Every backbone forward takes a fixed chunk of ``chunk`` images
  (``--batch-size``, the same at any world size), and a batch's chunks go to the ranks in
  contiguous runs (:func:`row_bounds`). An image is therefore always forwarded beside the same
  images, so its features are bit for bit the ones a single rank computes.
* **Layer sets are owned by ranks.** The heads of a layer set (all its grid points, their
  gradients and optimizer states) live on one rank only (:func:`set_bounds`: contiguous, balanced
  runs of the set list). Each batch's block outputs go from the ranks that computed them to the
  ranks that own the sets (an all-to-all), and each owner trains its heads on the whole global
  batch. A head's arithmetic is then exactly the single-rank arithmetic: no gradient is reduced
  across ranks, so there is no reduction order to differ, and the heads' memory is divided by
  the world size (the heads of AIM-7B x 26 layer sets x the attentive grid, about 78 GB, are
  under 10 GB a rank on 8 GPUs).

Why not FSDP / ZeRO over the heads: sharding every head across ranks would reduce each head's
gradients over ranks (an all-reduce whose order is the world's, so numbers would move with the
world size in the last bits, enough to flip a selection between two tied heads), and would
all-gather every head's parameters every step. Owning whole sets moves the block outputs once per
batch instead, and leaves each head's training unchanged. The limit: a world larger than the
number of layer sets leaves some ranks with no heads (they still forward images); a ``--layers last``
cell on 8 GPUs shards its forwards eight ways but trains its one set's heads on one rank.

Torch-free: the cost plan imports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from aimbench.errors import UserError

T = TypeVar("T")


def check_world(sets: Sequence[object], world: int) -> None:
    """Refuse a world with more ranks than the cell has layer sets: every rank owns at least one set."""
    if world > len(sets):
        raise UserError(f"this cell has {len(sets)} layer set(s) and each rank owns whole ones, so it runs on at most "
                        f"{len(sets)} rank(s), not {world}: use fewer GPUs, or more layer sets (--layers)")  # fmt: skip


def split_evenly(count: int, parts: int) -> list[int]:
    """Bounds ``b`` (length ``parts + 1``) of ``count`` items in ``parts`` contiguous runs whose sizes
    differ by at most one, the larger runs first: part ``i`` holds items ``b[i]:b[i + 1]``."""
    if parts < 1:
        raise ValueError(f"cannot split into {parts} parts")
    base, extra = divmod(count, parts)
    bounds = [0]
    for part in range(parts):
        bounds.append(bounds[-1] + base + (part < extra))
    return bounds


def set_bounds(sets: int, world: int) -> list[int]:
    """Which layer sets each rank owns: rank ``r`` the sets ``b[r]:b[r + 1]`` (possibly none)."""
    return split_evenly(sets, world)


def row_bounds(rows: int, chunk: int, world: int) -> list[int]:
    """Which rows of a batch of ``rows`` images each rank forwards: rank ``r`` rows ``b[r]:b[r + 1]``,
    whole chunks of ``chunk`` images (the last may be short), so every forward is the chunk a single
    rank would make."""
    if chunk < 1:
        raise ValueError(f"chunk of {chunk} images")
    chunks = -(-rows // chunk)
    return [min(rows, bound * chunk) for bound in split_evenly(chunks, world)]


def most_sets_per_rank(sets: int, world: int) -> int:
    """The most layer sets any rank owns: what sizes a rank's heads."""
    return -(-sets // world)


@dataclass(frozen=True)
class Shard:
    """This process's place in the world that runs one cell: ``rank`` of ``world`` (1: alone), and
    the ``chunk`` of images every backbone forward takes (``--batch-size``)."""

    rank: int = 0
    world: int = 1
    chunk: int = 64

    @property
    def alone(self) -> bool:
        return self.world == 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def owned(self, sets: Sequence[T]) -> list[T]:
        """The layer sets of ``sets`` whose heads this rank owns (alone: all of them)."""
        bounds = set_bounds(len(sets), self.world)
        return list(sets[bounds[self.rank] : bounds[self.rank + 1]])

    def rows(self, count: int) -> range:
        """The rows of a batch of ``count`` images this rank forwards."""
        bounds = row_bounds(count, self.chunk, self.world)
        return range(bounds[self.rank], bounds[self.rank + 1])
