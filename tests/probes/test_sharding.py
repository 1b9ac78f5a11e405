"""The collectives of a multi-rank cell, on two gloo processes: what each rank receives equals what
a rank alone would slice out of the whole batch, for any window of rows, and the BatchNorm moments
of a batch are the same numbers, bit for bit, however its rows are spread."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing

from aimbench.launch.spawn import free_port
from aimbench.probes.attentive.batch_stats import batch_moments
from aimbench.probes.ownership import Shard
from aimbench.probes.sharding import to_owners

SETS, ROWS, CHUNK = 3, 21, 4  # rank 0 owns 2 sets and forwards rows 0-11 (3 chunks), rank 1 owns 1 set and rows 12-20
WINDOWS = [range(0, 21), range(0, 5), range(8, 16), range(12, 21), range(20, 21)]  # within a rank, across both, at the end


def _batch() -> torch.Tensor:
    """(L, B, N, D) tokens with a large offset, where a careless variance loses digits."""
    return torch.randn(SETS, ROWS, 5, 6, generator=torch.Generator().manual_seed(0)) * 3 + 1000


def _rank(rank: int, port: int, out: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    shard = Shard(rank, 2, CHUNK)
    mine = _batch()[:, shard.rows(ROWS).start : shard.rows(ROWS).stop]
    received = [to_owners(mine, shard, ROWS, window=window) for window in WINDOWS]
    torch.save({"received": received, "moments": batch_moments(mine, shard, ROWS)}, out / f"{rank}.pt")
    dist.destroy_process_group()


def test_owners_receive_every_window_of_rows_and_the_moments_do_not_depend_on_the_world(tmp_path: Path) -> None:
    torch.multiprocessing.spawn(_rank, args=(free_port(), tmp_path), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"{rank}.pt", weights_only=True) for rank in range(2)]
    whole = _batch()
    for rank, owned in enumerate([slice(0, 2), slice(2, 3)]):
        for window, got in zip(WINDOWS, ranks[rank]["received"]):
            assert torch.equal(got, whole[owned, window.start : window.stop])
    alone = batch_moments(whole, Shard(chunk=CHUNK), ROWS)
    for rank in range(2):
        mean, var, count = ranks[rank]["moments"]
        assert torch.equal(mean, alone[0]) and torch.equal(var, alone[1]) and count == alone[2] == ROWS * 5
    expected_var, expected_mean = torch.var_mean(whole.double().transpose(0, 3).reshape(6, -1, SETS), dim=1, correction=0)
    torch.testing.assert_close(alone[0], expected_mean.T, rtol=1e-7, atol=0)  # each chunk's moments in float32, merged in float64
    torch.testing.assert_close(alone[1], expected_var.T, rtol=1e-4, atol=0)
