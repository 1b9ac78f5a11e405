"""How the pre-training model spreads over ranks: DDP replicas or FSDP shards, and activation checkpointing.

DDP keeps a full copy of the weights, gradients and AdamW moments on every rank: 16 bytes per
parameter, 10 GB for aim-600m, which a training GPU holds. From aim-1b on that copy no longer fits
beside the activations (aim-7b: 7e9 x 16 B = 112 GB), so ``auto`` switches to FSDP (torch's FSDP2
``fully_shard``): weights, gradients and optimizer state are sharded over the ranks, each trunk
block and head block is its own unit (only one block's full weights exist at a time, gathered in
bf16 on GPU, gradients reduced in fp32), and activation checkpointing recomputes each block in the
backward instead of storing its activations.

Checkpoints hold full (unsharded) tensors, gathered block by block to rank 0's CPU memory
(``torch.distributed.checkpoint.state_dict``) and, on resume, read by rank 0 and broadcast into the
shards. One file therefore resumes on any number of ranks and under either strategy, and the trunk
export needs no conversion. The price is that rank 0's host needs RAM for the full state (about
84 GB for aim-7b: fp32 weights plus two AdamW moments).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

from aimbench.distributed import World
from aimbench.errors import UserError
from aimbench.pretrain.objective import AimPretrainModel

STRATEGIES = ("auto", "ddp", "fsdp")
SHARDED_BY_DEFAULT = ("aim-1b", "aim-3b", "aim-7b")  # presets whose replicated state does not fit one GPU


@dataclass(frozen=True)
class Parallelism:
    """What ``train`` does with the model: 'single' (one rank), 'ddp' or 'fsdp'; and whether blocks recompute."""

    strategy: str
    activation_checkpointing: bool

    @property
    def sharded(self) -> bool:
        return self.strategy == "fsdp"


def choose(preset: str, world: World, strategy: str = "auto", activation_checkpointing: bool | None = None) -> Parallelism:
    """Resolve ``--parallel`` and ``--activation-checkpointing`` (None = auto: on for the presets FSDP shards by default)."""
    if strategy not in STRATEGIES:
        raise UserError(f"--parallel must be one of {', '.join(STRATEGIES)}, got '{strategy}'")
    big = preset in SHARDED_BY_DEFAULT
    recompute = big if activation_checkpointing is None else activation_checkpointing
    if world.size == 1:
        if strategy == "fsdp":
            raise UserError("--parallel fsdp shards over several ranks; launch with torchrun or srun (one process per GPU)")
        return Parallelism("single", recompute)
    if strategy == "auto":
        strategy = "fsdp" if big else "ddp"
    return Parallelism(strategy, recompute)


def parallelize(model: AimPretrainModel, plan: Parallelism, device: torch.device, bf16: bool) -> nn.Module:
    """The module to call for the loss: ``model`` itself (FSDP shards it in place) or its DDP wrapper."""
    model.trunk.set_grad_checkpointing(plan.activation_checkpointing)
    model.head.set_grad_checkpointing(plan.activation_checkpointing)
    if plan.strategy == "ddp":
        return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if plan.sharded:
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else MixedPrecisionPolicy()
        for block in [*model.trunk.trunk.blocks, *model.head.blocks]:
            fully_shard(block, mp_policy=policy)
        fully_shard(model, mp_policy=policy)  # the rest: patch embedding, norms, head projections
    return model


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, Any], dict[str, Any]]:
    """Unsharded model and optimizer state on rank 0's CPU (empty elsewhere). Collective: every rank calls it."""
    return get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any], plan: Parallelism) -> None:
    """Inverse of :func:`full_state`; when sharded, only rank 0 needs ``state`` (the others pass ``{}``)."""
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=plan.sharded)
    # Two calls, not set_state_dict: given an empty model state (ranks > 0) it would skip the model's broadcast.
    set_model_state_dict(model, state.get("model", {}), options=options)
    set_optimizer_state_dict(model, optimizer, state.get("optimizer", {}), options=options)


def local_value(tensor: torch.Tensor) -> torch.Tensor:
    """A plain tensor from a possibly sharded one (the gradient norm is a DTensor under FSDP)."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor
