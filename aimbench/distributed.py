"""Rank and world size from the launcher's environment: torchrun, or one Slurm task per GPU.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK and the rendezvous address; under ``srun`` each task
has SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID, and the first node of SLURM_JOB_NODELIST is the
rendezvous host (MASTER_ADDR / MASTER_PORT may override). One process per device: NCCL on CUDA,
gloo on CPU (which is how the tests run two ranks for real).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from aimbench.devices import parse_device
from aimbench.errors import UserError
from aimbench.provenance import resolve_device

T = TypeVar("T")

DEFAULT_PORT = "29500"


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _first_slurm_host() -> str:
    nodes = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST") or "localhost"
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodes], capture_output=True, text=True, check=True, timeout=30)
        return out.stdout.split()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return nodes.split(",")[0]


def world_from_env() -> World:
    """The world this process belongs to (size 1 when no launcher set one)."""
    env = os.environ
    if "WORLD_SIZE" in env and "RANK" in env:
        return World(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        env.setdefault("MASTER_ADDR", _first_slurm_host())
        # per job, so two jobs sharing a node do not meet at the same rendezvous port
        job = env.get("SLURM_JOB_ID", "")
        env.setdefault("MASTER_PORT", str(20000 + int(job) % 20000) if job.isdigit() else DEFAULT_PORT)
        return World(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)))
    return World()


def rank_device(name: str, world: World) -> torch.device:
    """``--device`` for this rank: with several ranks, CUDA means this rank's GPU (LOCAL_RANK / SLURM_LOCALID);
    a single process gets the device it names, refused in one line where it is not there."""
    if world.size > 1 and parse_device(name).kind == "cuda":
        return torch.device("cuda", world.local_rank)
    return resolve_device(name)


def init_process_group(world: World, device: torch.device) -> None:
    """gloo on CPU, NCCL on CUDA with this rank's GPU made current first: collectives that pick
    the current device themselves (``broadcast_object_list``, ``barrier``) must not all land on cuda:0."""
    if world.size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=world.rank, world_size=world.size)


def all_finite(value: torch.Tensor, world: World) -> bool:
    """Whether ``value`` is finite on every rank (so all ranks stop together on a NaN)."""
    flag = torch.isfinite(value.detach()).all().to(torch.float32).reshape(1)
    if world.size > 1:
        flag = flag.to(value.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item() > 0)


def from_rank_zero(compute: Callable[[], T], world: World) -> T:
    """``compute()`` on rank 0, its result on every rank (e.g. a hub revision resolved once, so no two
    ranks read different commits). A ``UserError`` on rank 0 is raised on every rank, not left to hang them."""
    if world.size == 1:
        return compute()
    holder: list[Any] = [None, None]
    if world.is_main:
        try:
            holder = [compute(), None]
        except UserError as exc:
            holder = [None, str(exc)]
    dist.broadcast_object_list(holder, src=0)
    if holder[1] is not None:
        raise UserError(holder[1])
    return holder[0]


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()
