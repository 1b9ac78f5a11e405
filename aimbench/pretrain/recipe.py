"""The AIM pre-training recipe as defaults, every value overridable and recorded with the run.

AdamW with betas (0.9, 0.95) and weight decay 0.05 on matrices only (biases, norms and position
embeddings are excluded, as in the paper and l3m's ``wd_exclude``); peak learning rate 1e-3 at a
global batch of 4096, scaled linearly with the batch; linear warmup over 2.5 % of the steps (from
lr/warmup, not 0, so step 0 trains), then cosine to 0; gradient clipping at norm 1.0; bf16 autocast
on GPU. The paper's augmentation (RandomResizedCrop scale 0.4-1, bicubic, flip) lives in the data
module.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from aimbench.cards.registry import Registry
from aimbench.errors import UserError, unknown_name
from aimbench.models.aim import PRESETS
from aimbench.pretrain.head import HEAD_PRESETS, HeadConfig

# The input size each preset trains at: the paper's 224 (16 x 16 patches of 14), 32 px for CPU presets.
IMAGE_SIZES = {"aim-600m": 224, "aim-1b": 224, "aim-3b": 224, "aim-7b": 224, "aim-tiny": 32, "aim-micro": 16}


@dataclass
class PretrainConfig:
    preset: str
    steps: int
    batch_size: int = 4096  # global: per-rank batch x world size
    lr: float | None = None  # the effective peak; default base_lr x batch / base_batch
    base_lr: float = 1e-3
    base_batch: int = 4096
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.05
    warmup_fraction: float = 0.025
    grad_clip: float = 1.0
    dtype: str = "bf16"  # autocast dtype on CUDA; CPU runs in fp32 (recorded as the dtype used)
    seed: int = 0
    image_size: int = 0  # 0 = the preset's
    save_every: int = 1000
    head: HeadConfig | None = None  # None = the preset's (HEAD_PRESETS)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise unknown_name("preset", self.preset, PRESETS)
        if self.steps < 1 or self.batch_size < 1:
            raise UserError(f"--steps and --batch-size must be positive, got {self.steps} and {self.batch_size}")
        if self.dtype not in ("bf16", "fp32"):
            raise UserError(f"--dtype must be bf16 or fp32, got '{self.dtype}'")
        if not self.image_size:
            self.image_size = IMAGE_SIZES[self.preset]
        if self.image_size % PRESETS[self.preset].patch_size:
            raise UserError(f"--image-size {self.image_size} is not a multiple of {self.preset}'s patch size {PRESETS[self.preset].patch_size}")
        if self.head is None:
            self.head = HEAD_PRESETS[self.preset]

    @classmethod
    def matching_card(cls, preset: str, registry: Registry, **settings: Any) -> PretrainConfig:
        """A config whose input normalisation is the one ``aimbench eval`` feeds the preset's card (when it has one)."""
        if preset in registry.backbones:
            card = registry.backbone(preset).preprocess
            settings = {"mean": tuple(card.mean), "std": tuple(card.std), **settings}
        return cls(preset, **settings)

    @property
    def effective_lr(self) -> float:
        return self.lr if self.lr is not None else self.base_lr * self.batch_size / self.base_batch

    @property
    def warmup_steps(self) -> int:
        return max(1, round(self.warmup_fraction * self.steps))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "effective_lr": self.effective_lr, "warmup_steps": self.warmup_steps}


def lr_multiplier(step: int, total: int, warmup: int) -> float:
    """Linear warmup to 1 over ``warmup`` steps (step 0 at 1/warmup), then cosine down to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def is_decayed(name: str, parameter: torch.Tensor) -> bool:
    """Weight decay applies to weight matrices and conv kernels only: not to biases, norms or position embeddings."""
    return parameter.ndim >= 2 and "pos_embed" not in name and "norm" not in name


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (decay if is_decayed(name, parameter) else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, config: PretrainConfig) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.effective_lr, betas=config.betas, eps=1e-8)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_multiplier(step, config.steps, config.warmup_steps))
    return optimizer, scheduler
