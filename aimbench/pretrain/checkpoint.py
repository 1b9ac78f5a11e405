"""Pre-training checkpoints (resume exactly) and the exported trunk (evaluate with aimbench).

A checkpoint holds everything the next step depends on: trunk and head weights, the optimizer
and scheduler state, the step (which is also the data position: batches and prefix lengths are
pure functions of seed and step) and the RNG state. It is written atomically, so an interrupted
save leaves the previous checkpoint intact, and read with ``torch.load(weights_only=True)``: no
pickled code runs. It carries the checksum of its content, verified on resume: a checkpoint
damaged after it was written (one flipped bit can export weights of 4e37) is never continued. The
trunk is exported as safetensors in Apple's AIM key layout, which ``aimbench eval --backbone
<preset> --weights RUN_DIR`` (or the file) loads strictly; its metadata names the LayerNorm eps it
was trained with (l3m's 1e-5, not the released models' 1e-6), and evaluation builds the trunk
with that eps.
"""

from __future__ import annotations

import io
import json
import pickle  # only for its exception type: weights_only loading refuses to run pickled code
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from aimbench.atomic import atomic_write
from aimbench.checksum import CHECKSUM_KEY, content_sha256, seal, unseal
from aimbench.errors import UserError
from aimbench.paths import PRETRAIN_TRUNK
from aimbench.pretrain.metrics_file import METRICS
from aimbench.safetensors_bytes import save_deterministic

CHECKPOINT = "checkpoint.pt"
TRUNK = PRETRAIN_TRUNK
CONFIG = "config.json"
LOSS_CURVE = "loss.png"


@dataclass(frozen=True)
class RunFiles:
    """Where a run directory keeps its files."""

    root: Path
    checkpoint: Path
    trunk: Path
    metrics: Path
    config: Path
    loss_curve: Path

    @classmethod
    def of(cls, root: Path) -> RunFiles:
        return cls(root, root / CHECKPOINT, root / TRUNK, root / METRICS, root / CONFIG, root / LOSS_CURVE)

    def require_new_or_resumed(self, resume: bool) -> None:
        """A run directory holding a checkpoint is continued with ``--resume``, never overwritten."""
        if self.checkpoint.exists() and not resume:
            raise UserError(f"{self.root} already holds a run; pass --resume to continue it, or choose another --out")


def save_checkpoint(path: Path, model_state: dict, optimizer_state: dict, scheduler: Any, step: int, config: dict) -> None:
    """Full (unsharded) states from :func:`aimbench.pretrain.parallel.full_state`; ``step`` optimizer steps are done."""
    state = {
        "model": model_state,
        "optimizer": optimizer_state,
        "scheduler": scheduler.state_dict(),
        "step": step,
        "config": json.dumps(config),
        "rng": torch.get_rng_state(),
    }
    buffer = io.BytesIO()
    torch.save(seal(state), buffer)
    atomic_write(path, lambda handle: handle.write(buffer.getbuffer()))


def load_checkpoint(path: Path, verify: bool = True) -> dict[str, Any]:
    """Memory-mapped: a rank that only needs the step, the scheduler and the RNG (every rank but 0
    under FSDP) never reads the tensors, so eight ranks of a node do not each hold aim-7b's 84 GB.
    ``verify`` compares the checksum, which reads every tensor: the rank that uses them does it."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as exc:
        raise UserError(f"checkpoint {path} cannot be read ({str(exc).splitlines()[0]}); delete it to start over") from None
    if not isinstance(saved, dict) or not {"model", "step", "config"} <= saved.keys() or CHECKSUM_KEY not in saved:
        raise UserError(f"{path} is not an aimbench pre-training checkpoint (no model, step and checksum); delete it to start over")
    state = unseal(saved) if verify else {key: value for key, value in saved.items() if key != CHECKSUM_KEY}
    if state is None:
        raise UserError(f"checkpoint {path} failed its checksum (damaged after it was written); restore a copy, or delete it to start over")
    state["config"] = json.loads(state["config"])
    return state


def trunk_state(model_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The trunk's part of an :class:`AimPretrainModel` state, in Apple's key layout (``preprocessor.*``, ``trunk.*``)."""
    return {name.removeprefix("trunk."): tensor for name, tensor in model_state.items() if name.startswith("trunk.")}


def export_trunk(model_state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """The trunk's weights of a full model state as safetensors; the head is dropped."""
    tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in trunk_state(model_state).items()}
    data = save_deterministic(tensors, {**metadata, CHECKSUM_KEY: content_sha256(tensors)})
    atomic_write(path, lambda handle: handle.write(data))
