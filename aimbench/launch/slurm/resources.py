"""What one eval cell asks Slurm for: the user's settings, filled in from the cell's memory need.

The need (``aimbench.launch.memory.cell_memory``) is the backbone's (a card may say how much
device memory it needs per dtype, ``[variants.X.resources] memory_gb = { fp32 = 34, bf16 = 18 }``;
a card without a hint gets an estimate from its depth and width, labelled as such wherever it is
shown) plus the heads' (the probe kind's estimate: on a GPU the least one pass holds, on a CPU all
of them). The need then picks defaults the user has not set:

* GPU cells, where the settings list ``gpu_types`` (node feature -> GB per GPU) and no
  ``--constraint``: the constraint becomes every GPU kind that fits (``a100-80g|h100``), so a
  3B in fp32 never lands on a 32 GB card and a small model may use any.
* GPU cells, where the settings give ``gpu_memory_gb``: a cell that cannot fit is refused before
  anything is submitted, with what would fit instead.
* CPU-only cells without ``mem_gb``: the host memory asked for is the need plus
  ``HOST_RUNTIME_GB`` for the interpreter, torch and the decoded images (asking too little gets a
  cell killed where memory is enforced; asking too much only queues it longer).

A cell on several ranks (``--nodes`` x ``--tasks-per-node``, one task per GPU by default) is one job of
that many tasks; each task runs the cell's callable as one rank. Cells whose parameters come out
equal share one job array.
"""

from __future__ import annotations

import math
from typing import Any

from aimbench.errors import UserError
from aimbench.launch.memory import MemoryNeed
from aimbench.launch.slurm.settings import SlurmSettings

HOST_RUNTIME_GB = 4.0


def cell_parameters(settings: SlurmSettings, need: MemoryNeed, name: str, nodes: int = 1, tasks_per_node: int = 1) -> dict[str, Any]:
    """submitit parameters for one eval cell of backbone ``name`` that needs ``need`` (backbone and
    heads), run by ``nodes`` x ``tasks_per_node`` tasks (one rank each; submitit runs the job's
    callable in every task): one rank's need where the cell runs on several (``need.ranks``), since
    each GPU holds one rank, so a cell whose heads fit only when divided among its ranks is not refused for their sum."""
    parameters = settings.executor_parameters(nodes=nodes, tasks_per_node=tasks_per_node)
    if nodes * tasks_per_node > 1:
        # a rank that dies leaves the others in a collective until the time limit: Slurm ends the whole step instead
        parameters["srun_args"] = ["--kill-on-bad-exit=1"]
    if settings.gpus == 0:
        if settings.mem_gb is None:  # per node: every task there holds its own backbone (whole GB: close needs share an array)
            parameters["mem_gb"] = math.ceil((need.total_gb + HOST_RUNTIME_GB) * tasks_per_node)
        return parameters
    if settings.constraint is None and settings.gpu_types:
        fitting = sorted(name for name, gb in settings.gpu_types.items() if gb >= need.total_gb)
        if not fitting:
            largest = max(settings.gpu_types.values())
            raise UserError(f"{name} needs {need.describe()} of GPU memory; the largest of gpu_types has {largest:g} GB: "
                            f"use a smaller --dtype, or add a bigger GPU kind to gpu_types")  # fmt: skip
        parameters["slurm_constraint"] = "|".join(fitting)
    elif settings.gpu_memory_gb is not None and need.total_gb > settings.gpu_memory_gb:
        raise UserError(f"{name} needs {need.describe()} of GPU memory; the partition's GPUs have {settings.gpu_memory_gb:g} GB "
                        f"(gpu_memory_gb): use a smaller --dtype, or another partition")  # fmt: skip
    return parameters
