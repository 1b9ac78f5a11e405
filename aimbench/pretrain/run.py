"""The one pre-training run callable, as ``run_cell`` is for eval: the local launcher (plain or under
torchrun) and each Slurm task call :func:`run_pretrain`; rank and world come from the environment."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from aimbench.distributed import World, rank_device, world_from_env
from aimbench.pretrain.parallel import Parallelism, choose
from aimbench.pretrain.recipe import PretrainConfig
from aimbench.pretrain.request import PretrainRequest
from aimbench.pretrain.sources import parse_data
from aimbench.pretrain.trainer import StepMetrics, TrainOutcome, train


@dataclass(frozen=True)
class PretrainSetup:
    """How this process takes part: the recipe, its rank in the world, the parallelism and its device."""

    config: PretrainConfig
    world: World
    plan: Parallelism
    device: torch.device
    out: Path  # the run folder


def prepare_run(request: PretrainRequest) -> PretrainSetup:
    world = world_from_env()
    plan = choose(request.preset, world, request.parallel, request.activation_checkpointing)
    return PretrainSetup(request.config(), world, plan, rank_device(request.device, world), request.out)


def run_pretrain(
    request: PretrainRequest, setup: PretrainSetup | None = None, on_step: Callable[[StepMetrics], None] = lambda _: None
) -> TrainOutcome:
    """Train ``request`` to its last step, continuing the run in ``request.out`` when it asks to resume
    (a requeued Slurm task does: its own checkpoint is there); returns this call's metrics and the model."""
    setup = setup or prepare_run(request)
    return train(setup.config, parse_data(request.data), request.out, setup.device, setup.world, resume=request.resume, workers=request.workers,
                 use_compile=request.compile, on_step=on_step, plan=setup.plan, allow_data_change=request.allow_data_change)  # fmt: skip
