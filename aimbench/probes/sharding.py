"""The collectives one cell needs across its ranks, following :mod:`aimbench.probes.ownership`.

Three movements, each a no-op for a rank alone, so single-rank code paths run unchanged:

* :func:`to_owners`: every rank holds all layer sets for its rows of a batch, every owner needs its
  sets for all rows. An all-to-all (NCCL's, or on gloo, which has none, one gather per
  destination, with every piece padded to the largest so the gathers see equal sizes).
* :func:`all_rows`: every rank holds its rows, every rank needs all of them (the feature cache's
  extraction, sharded, then written once).
* :func:`gathered` and :func:`any_rank`: Python objects (each rank's scores) and flags (stop, save)
  seen by all, so every rank leaves a loop at the same step and the main rank writes the record.

Padding and trimming follow from bounds every rank computes alike (``ownership``), so no sizes are
exchanged, and the pieces are laid end to end in rank order: the global order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from aimbench.distributed import World, from_rank_zero
from aimbench.distributed import barrier as world_barrier
from aimbench.errors import UserError
from aimbench.probes.ownership import Shard, row_bounds, set_bounds
from aimbench.probes.results import ProbeResult, summarise

T = TypeVar("T")


def _collective_device() -> torch.device:
    """Where collectives take their tensors: NCCL this rank's GPU, gloo the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def _padded(piece: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """``piece`` in a zero tensor of ``shape`` (each dim at least the piece's), contiguous."""
    out = piece.new_zeros(tuple(shape))
    out[tuple(slice(0, size) for size in piece.shape)] = piece
    return out


def _send_and_receive(pieces: list[torch.Tensor], into: list[torch.Tensor], shard: Shard, largest: int) -> None:
    """All-to-all: ``pieces[d]`` goes to rank d, and what rank s sends us lands in ``into[s]`` (all
    contiguous). NCCL takes pieces of any size; gloo has no all-to-all, so each rank gathers its
    pieces in turn, padded to ``largest`` values, the same on every rank (gloo's gather takes equal
    sizes; gloo runs on CPUs, where the copies cost little)."""
    if dist.get_backend() == "nccl":
        dist.all_to_all(into, pieces)
        return
    flat = [torch.cat([piece.reshape(-1), piece.new_zeros(largest - piece.numel())]) for piece in pieces]
    received = [flat[0].new_empty(largest) for _ in range(shard.world)]
    for destination in range(shard.world):
        dist.gather(flat[destination], received if destination == shard.rank else None, dst=destination)
    for target, got in zip(into, received):
        target.copy_(got[: target.numel()].view_as(target))


def _overlap(rows: range, window: range) -> range:
    """The rows of ``rows`` in ``window``; empty ones start inside the window (where they land)."""
    start = min(max(rows.start, window.start), window.stop)
    return range(start, max(start, min(rows.stop, window.stop)))


def _entries(local: torch.Tensor | Sequence[torch.Tensor], set_dim: int) -> list[torch.Tensor]:
    """``local``'s set entries, each keeping a set axis of size one: a tensor's slices along
    ``set_dim``, or a sequence of tensors, one an entry (``set_dim`` 0)."""
    if isinstance(local, torch.Tensor):
        return [local.narrow(set_dim, index, 1) for index in range(local.shape[set_dim])]
    if set_dim != 0:
        raise ValueError("a sequence of set entries stacks them along dim 0")
    return [entry.unsqueeze(0) for entry in local]


def to_owners(
    local: torch.Tensor | Sequence[torch.Tensor], shard: Shard, rows: int, set_dim: int = 0, row_dim: int = 1, per_set: int = 1,
    window: range | None = None,
) -> torch.Tensor:  # fmt: skip
    """This rank's rows of a batch of ``rows`` images, for every layer set (``local``: its
    ``shard.rows(rows)`` along ``row_dim``, every set along ``set_dim``, ``per_set`` entries a set;
    or one tensor an entry, without the set axis) -> this rank's own sets for every row of
    ``window`` (default: the whole batch), in order.

    Memory: the result is allocated once and filled one set entry at a time (each rank sends its
    rows of the window of the entry to the entry's owner), so beside ``local`` only the result
    exists; the attentive heads take a batch one micro-batch window at a time, so their owners
    never hold a whole batch of their sets' tokens."""
    window = range(rows) if window is None else window
    if shard.alone:
        if isinstance(local, torch.Tensor):
            return local.narrow(row_dim, window.start, len(window))
        return torch.cat([entry.narrow(row_dim, window.start, len(window)) for entry in _entries(local, set_dim)], dim=set_dim)
    entries = _entries(local, set_dim)
    home = entries[0].device
    entries = [entry.to(_collective_device()) for entry in entries]
    sets = [bound * per_set for bound in set_bounds(len(entries) // per_set, shard.world)]
    row = row_bounds(rows, shard.chunk, shard.world)
    sent = [_overlap(range(row[s], row[s + 1]), window) for s in range(shard.world)]  # each rank's rows of the window
    shape = list(entries[0].shape)
    shape[set_dim], shape[row_dim] = sets[shard.rank + 1] - sets[shard.rank], len(window)
    out = entries[0].new_empty(shape)
    per_row = math.prod(size for dim, size in enumerate(shape) if dim not in (set_dim, row_dim))
    largest = max(len(r) for r in sent) * per_row  # the largest piece any rank sends: one entry, the most rows
    mine = sent[shard.rank]
    nothing = entries[0].narrow(set_dim, 0, 0)
    for entry in range(max(b - a for a, b in zip(sets, sets[1:]))):  # the entry-th set entry of every owner at once
        pieces = [entries[sets[d] + entry].narrow(row_dim, mine.start - row[shard.rank], len(mine)) if mine and sets[d] + entry < sets[d + 1]
                  else nothing for d in range(shard.world)]  # fmt: skip
        into = [out.narrow(set_dim, entry, 1).narrow(row_dim, sent[s].start - window.start, len(sent[s]))
                if entry < shape[set_dim] else out.narrow(set_dim, 0, 0) for s in range(shard.world)]  # fmt: skip
        landing = [view if view.is_contiguous() else torch.empty_like(view) for view in into]
        _send_and_receive([piece.contiguous() for piece in pieces], landing, shard, largest)
        for view, landed in zip(into, landing):
            if landed is not view:
                view.copy_(landed)
    return out.to(home)


def all_rows(local: torch.Tensor, shard: Shard, rows: int, row_dim: int = 0) -> torch.Tensor:
    """This rank's rows (``shard.rows(rows)`` along ``row_dim``) -> every row on every rank, in order."""
    if shard.alone:
        return local
    row = row_bounds(rows, shard.chunk, shard.world)
    shape = list(local.shape)
    shape[row_dim] = max(b - a for a, b in zip(row, row[1:]))
    moved = local.to(_collective_device())
    received = [moved.new_empty(shape) for _ in range(shard.world)]
    dist.all_gather(received, _padded(moved, shape))
    rows_by_rank = [piece.narrow(row_dim, 0, row[src + 1] - row[src]) for src, piece in enumerate(received)]
    return torch.cat(rows_by_rank, dim=row_dim).to(local.device)


def gathered(value: T, shard: Shard) -> list[T]:
    """Every rank's ``value``, in rank order, on every rank."""
    if shard.alone:
        return [value]
    out: list[Any] = [None] * shard.world
    dist.all_gather_object(out, value)
    return out


def any_rank(flags: Sequence[bool], shard: Shard) -> list[bool]:
    """Each flag, true where it is true on any rank: one small all-reduce for all of them."""
    if shard.alone:
        return list(flags)
    values = torch.tensor([float(flag) for flag in flags], device=_collective_device())
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return [bool(value) for value in values.tolist()]


def same_on_every_rank(value: int, shard: Shard) -> bool:
    """Whether every rank holds the same ``value``: one all-reduce of (value, -value) under MAX gives the largest and the smallest."""
    if shard.alone:
        return True
    values = torch.tensor([float(value), -float(value)], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return bool(values[0] == -values[1])


def _world(shard: Shard) -> World:
    return World(shard.rank, shard.world)


def from_main(value: T, shard: Shard) -> T:
    """The main rank's ``value`` on every rank (a decision made once, e.g. which cache blocks are missing)."""
    return from_rank_zero(lambda: value, _world(shard))


def barrier(shard: Shard) -> None:
    """Wait for every rank (after the main rank wrote what the others will read)."""
    world_barrier(_world(shard))


def merged_results(compute: Callable[[], ProbeResult], shard: Shard) -> ProbeResult:
    """``compute()`` on every rank (its own layer sets' heads and scores), merged in rank order,
    which is the sets' order: the result a rank alone gives. A :class:`UserError` on any rank (a
    head gone non-finite) is raised on every rank, so none is left waiting for the others."""
    if shard.alone:
        return compute()
    try:
        mine: tuple[ProbeResult | None, str | None] = (compute(), None)
    except UserError as exc:
        mine = (None, str(exc))
    everyone = gathered(mine, shard)
    failed = [error for _, error in everyone if error is not None]
    if failed:
        raise UserError(failed[0])
    results = [result for result, _ in everyone if result is not None]
    return summarise([h for r in results for h in r.heads], [layer for r in results for layer in r.layers])
