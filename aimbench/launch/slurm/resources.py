"""What one eval cell asks Slurm for: the user's settings, filled in from the backbone card's hint.

A backbone card may say how much device memory an eval cell needs per dtype
(``[variants.X.resources] memory_gb = { fp32 = 34, bf16 = 18 }``); a card without a hint gets an
estimate from its depth and width (weights, plus a fifth for activations at the default batch,
plus a GB for the runtime), labelled as such wherever it is shown. The need then picks defaults
the user has not set:

* GPU cells, where the settings list ``gpu_types`` (node feature -> GB per GPU) and no
  ``--constraint``: the constraint becomes every GPU kind that fits (``a100-80g|h100``), so a
  3B in fp32 never lands on a 32 GB card and a small model may use any.
* GPU cells, where the settings give ``gpu_memory_gb``: a cell that cannot fit is refused before
  anything is submitted, with what would fit instead.
* CPU-only cells without ``mem_gb``: the host memory asked for is the need plus
  ``HOST_RUNTIME_GB`` for the interpreter, torch and the decoded images (asking too little gets a
  cell killed where memory is enforced; asking too much only queues it longer).

Cells whose parameters come out equal share one job array.
"""

from __future__ import annotations

from typing import Any

from aimbench.cards.backbone_card import BackboneSpec
from aimbench.errors import UserError
from aimbench.launch.memory import MemoryNeed, memory_need
from aimbench.launch.slurm.settings import SlurmSettings

HOST_RUNTIME_GB = 4.0


def cell_parameters(settings: SlurmSettings, spec: BackboneSpec, dtype: str) -> tuple[dict[str, Any], MemoryNeed]:
    """submitit parameters for one eval cell of ``spec`` in ``dtype``, and the need they were sized from."""
    need = memory_need(spec, dtype)
    parameters = settings.executor_parameters()
    if settings.gpus == 0:
        if settings.mem_gb is None:
            parameters["mem_gb"] = need.gb + HOST_RUNTIME_GB
        return parameters, need
    if settings.constraint is None and settings.gpu_types:
        fitting = sorted(name for name, gb in settings.gpu_types.items() if gb >= need.gb)
        if not fitting:
            largest = max(settings.gpu_types.values())
            raise UserError(f"{spec.name} needs {need.describe()} of GPU memory; the largest of gpu_types has {largest:g} GB: "
                            f"use a smaller --dtype, or add a bigger GPU kind to gpu_types")  # fmt: skip
        parameters["slurm_constraint"] = "|".join(fitting)
    elif settings.gpu_memory_gb is not None and need.gb > settings.gpu_memory_gb:
        raise UserError(f"{spec.name} needs {need.describe()} of GPU memory; the partition's GPUs have {settings.gpu_memory_gb:g} GB "
                        f"(gpu_memory_gb): use a smaller --dtype, or another partition")  # fmt: skip
    return parameters, need
