"""How many ranks run each cell, from the options of ``aimbench eval`` and the environment it was started in.

Three ways to run one cell on many ranks, and one answer each, checked before anything is planned:

* here, ``--gpus N``: N processes per cell started by the local launcher (CPU processes on gloo
  with ``--device cpu``; on CUDA no more than the GPUs visible);
* under torchrun (or ``srun``), the world is given: every process is one rank already, so ``--gpus``
  may only repeat its size, and nothing is submitted from a rank;
* on Slurm, ``--nodes M`` x the tasks per node (``--tasks-per-node``, default one per GPU of
  ``--gpus-per-node``, else 1): one job of that many tasks per cell.

Torch-free unless a launcher's environment is there to read.
"""

from __future__ import annotations

import os

from aimbench.devices import cuda_device_count, parse_device
from aimbench.errors import UserError, at_least


def launched_world() -> tuple[int, int]:
    """This process's rank and the world size torchrun or srun started it in ((0, 1) when it runs alone).

    ``salloc`` alone sets no SLURM_PROCID: a shell inside an allocation is not a rank."""
    if "WORLD_SIZE" not in os.environ and "SLURM_PROCID" not in os.environ:
        return 0, 1
    from aimbench.distributed import world_from_env  # imports torch: only when a launcher set a world

    world = world_from_env()
    return world.rank, world.size


def launched_size() -> int:
    return launched_world()[1]


def launched_nodes() -> int:
    """The machines a launched world spans: torchrun's WORLD_SIZE / LOCAL_WORLD_SIZE, Slurm's SLURM_JOB_NUM_NODES; else 1."""
    env = os.environ
    if "WORLD_SIZE" in env and env.get("LOCAL_WORLD_SIZE", "").isdigit() and int(env["LOCAL_WORLD_SIZE"]) > 0:
        return max(1, int(env["WORLD_SIZE"]) // int(env["LOCAL_WORLD_SIZE"]))
    if "SLURM_PROCID" in env and env.get("SLURM_JOB_NUM_NODES", "").isdigit():
        return max(1, int(env["SLURM_JOB_NUM_NODES"]))
    return 1


def local_ranks(gpus: int | None, device: str) -> int:
    """Ranks per cell for a local run: the launched world's size, else ``--gpus`` (default 1)."""
    given = launched_size()
    if given > 1:
        if gpus is not None and gpus != given:
            raise UserError(f"--gpus {gpus}, but this process is one of {given} ranks torchrun (or srun) started: the world is given; "
                            f"leave --gpus out (or give --gpus {given})")  # fmt: skip
        return given
    if gpus is None:
        return 1
    at_least("--gpus", gpus, 1)
    name = parse_device(device)
    if gpus == 1 or name.kind == "cpu":
        return gpus
    if name.kind == "mps":
        raise UserError("--gpus N runs N CUDA (or CPU) processes; mps has one device: use --device cpu or leave --gpus out")
    if name.index is not None:
        raise UserError(f"--device {name} names one GPU; --gpus {gpus} uses GPUs 0 to {gpus - 1} "
                        "(choose them with CUDA_VISIBLE_DEVICES): give --device cuda")  # fmt: skip
    visible = cuda_device_count()
    if visible is not None and gpus > visible:
        cpu = f"; --device cpu runs {gpus} CPU processes (gloo) instead"
        raise UserError(f"--gpus {gpus}, but {visible} CUDA GPU(s) are visible here{cpu}")
    return gpus


def slurm_ranks(gpus: int | None, ranks: int) -> int:
    """Ranks per cell on Slurm, the job's tasks (``--nodes`` x ``--tasks-per-node``), where this process may submit them."""
    if gpus is not None:
        raise UserError("--gpus N is for local runs; on Slurm give --nodes M and --gpus-per-node N (or --tasks-per-node N "
                        "on a CPU partition)")  # fmt: skip
    if launched_size() > 1:
        raise UserError("this process is one rank of a torchrun (or srun) world: submit to Slurm from a plain shell, not from every rank")
    return ranks
