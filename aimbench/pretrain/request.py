"""One pre-training run as a user asks for it (command line or Python), checked once, before any model
is built; a launcher (local, torchrun or Slurm) hands it to :func:`aimbench.pretrain.run.run_pretrain`.
Free of torch, so a bad option fails in a second."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aimbench.cards.registry import Registry
from aimbench.devices import parse_device
from aimbench.errors import at_least, positive

if TYPE_CHECKING:
    from aimbench.pretrain.recipe import PretrainConfig


@dataclass(frozen=True)
class PretrainRequest:
    """An AIM preset trained on ``data`` into ``out``; None and 0 mean the preset's (the paper's) value."""

    preset: str
    data: str  # image sources, comma-separated, optionally weighted (aimbench.pretrain.sources.parse_data)
    _: KW_ONLY
    steps: int | None = None
    batch_size: int = 4096  # global: all ranks together
    lr: float | None = None
    lr_scaling: str = "none"
    out: Path = Path("runs/pretrain")
    resume: bool = False
    allow_data_change: bool = False  # a resume may read other images than the run started with (recorded in the run)
    dtype: str = "bf16"
    image_size: int = 0
    save_every: int = 1000
    seed: int = 0
    workers: int = 4  # data-loading processes per rank
    device: str = "auto"
    compile: bool = False
    parallel: str = "auto"  # auto | ddp | fsdp
    activation_checkpointing: bool | None = None

    def __post_init__(self) -> None:
        for option, value, minimum in (("--steps", self.steps, 1), ("--batch-size", self.batch_size, 1), ("--image-size", self.image_size, 0),
                                       ("--save-every", self.save_every, 1), ("--workers", self.workers, 0)):  # fmt: skip
            if value is not None:
                at_least(option, value, minimum)
        if self.lr is not None:
            positive("--lr", self.lr)
        parse_device(self.device)  # the spelling; whether it exists is the launcher's question (a Slurm job's is the node's)

    def config(self, registry: Registry | None = None) -> PretrainConfig:
        """The run's recipe: the preset's, with this request's choices, normalised like the preset's eval card."""
        from aimbench.pretrain.recipe import PretrainConfig

        return PretrainConfig.matching_card(self.preset, registry or Registry.load(), steps=self.steps or 0, batch_size=self.batch_size,
                                            lr=self.lr, lr_scaling=self.lr_scaling, dtype=self.dtype, image_size=self.image_size,
                                            save_every=self.save_every, seed=self.seed)  # fmt: skip
