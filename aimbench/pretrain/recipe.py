"""The AIM pre-training recipe as defaults, every value overridable and recorded with the run.

The defaults are Apple's l3m config for AIM v1 (``configs/aimv1/001_aim_v1_600M.yaml``) and the
paper, checked against that config by ``tests/pretrain/test_official_equality.py``:

- AdamW, betas (0.9, 0.95), eps 1e-8, weight decay 0.05 except on parameters whose name matches
  l3m's ``wd_exclude`` patterns (biases, norms, position embeddings, gammas); gradient clip 1.0;
  bf16 autocast on GPU.
- Peak learning rate 1e-3 **whatever the global batch**: l3m passes ``optim.optimizer.lr`` to
  AdamW as written and never scales it, and the paper trains at 1e-3 with batch 4096.
  ``lr_scaling="linear"`` (1e-3 x batch / 4096) is aimbench's option, not the official rule.
- The schedule is l3m's fvcore composite at ``where = step / steps``: linear from 1e-6 (not 0, and
  not lr/warmup) to the peak over the first 2.5 %, then cosine from the peak to 0 over the rest,
  each phase rescaled to [0, 1]; a step on a boundary belongs to the later phase (fvcore's 1e-6).
- LayerNorm eps 1e-5 during pre-training (l3m's ``LayerNormFP32``); the released checkpoints' model
  code (ml-aim) uses 1e-6, so the exported trunk records the eps and evaluation builds it with it.
- Steps: the paper's, 500k for aim-600m (about 2B images at batch 4096) and 1.2M from aim-1b on
  (about 5B images); aimbench's own 10k for the CPU presets.
- Augmentation (``aimbench.pretrain.augment``): RandomResizedCrop 0.4-1 bicubic, flip, and colour
  jitter with probability 0.8.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from fnmatch import fnmatchcase
from typing import Any

import torch
from torch import nn

from aimbench.cards.registry import Registry
from aimbench.errors import UserError, at_least, unknown_name
from aimbench.models.aim import PRESETS
from aimbench.pretrain.augment import COLOR_JITTER_P
from aimbench.pretrain.head import HEAD_PRESETS, HeadConfig

# The input size each preset trains at: the paper's 224 (16 x 16 patches of 14), 32 px for CPU presets.
IMAGE_SIZES = {"aim-600m": 224, "aim-1b": 224, "aim-3b": 224, "aim-7b": 224, "aim-tiny": 32, "aim-micro": 16}
# The paper's schedule lengths (checkpoint names: 600M saw 2B images, the larger ones 5B, at batch 4096).
PRESET_STEPS = {"aim-600m": 500_000, "aim-1b": 1_200_000, "aim-3b": 1_200_000, "aim-7b": 1_200_000,
                "aim-tiny": 10_000, "aim-micro": 10_000}  # fmt: skip
# l3m's AIM v1 ``optim.wd_exclude``, matched against parameter names as l3m does (fnmatch).
WD_EXCLUDE = ("*bias*", "*pos_embed*", "*norm*", "*gamma*")
LR_SCALINGS = ("none", "linear")
TINY_LR_FACTOR = 10  # linear scaling that divides the lr by more than this gets a warning
WHERE_EPSILON = 1e-6  # fvcore's CompositeParamScheduler: where + 1e-6 past a phase's end is the next phase


@dataclass
class PretrainConfig:
    preset: str
    steps: int = 0  # 0 = the preset's (PRESET_STEPS)
    batch_size: int = 4096  # global: per-rank batch x world size
    lr: float | None = None  # the peak; None = base_lr, scaled by lr_scaling
    base_lr: float = 1e-3
    lr_scaling: str = "none"  # "none" (l3m, the paper) | "linear": base_lr x batch_size / base_batch (aimbench's option)
    base_batch: int = 4096
    warmup_fraction: float = 0.025
    warmup_start_lr: float = 1e-6
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    ln_eps: float = 1e-5  # l3m's pre-training LayerNorm; exported with the trunk
    color_jitter: float = COLOR_JITTER_P  # probability of the config's ColorJitter; 0 turns it off (a deviation)
    dtype: str = "bf16"  # autocast dtype on CUDA; CPU runs in fp32 (recorded as the dtype used)
    seed: int = 0
    image_size: int = 0  # 0 = the preset's
    save_every: int = 1000
    head: HeadConfig | None = None  # None = the preset's (HEAD_PRESETS): smaller than the paper's for CPU presets
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise unknown_name("preset", self.preset, PRESETS)
        self.steps = self.steps or PRESET_STEPS[self.preset]
        if self.steps < 1 or self.batch_size < 1:
            raise UserError(f"--steps and --batch-size must be positive, got {self.steps} and {self.batch_size}")
        at_least("--save-every", self.save_every, 1)
        at_least("--image-size", self.image_size, 0)  # 0 = the preset's
        if self.dtype not in ("bf16", "fp32"):
            raise UserError(f"--dtype must be bf16 or fp32, got '{self.dtype}'")
        if self.lr_scaling not in LR_SCALINGS:
            raise UserError(f"--lr-scaling must be one of {', '.join(LR_SCALINGS)}, got '{self.lr_scaling}'")
        if not self.effective_lr > 0:
            raise UserError(f"--lr must be positive, got {self.effective_lr}")
        if not 0 <= self.warmup_fraction < 1 or not 0 <= self.color_jitter <= 1:
            raise UserError(f"the warmup fraction must be in [0, 1) and the colour-jitter probability in [0, 1], "
                            f"got {self.warmup_fraction} and {self.color_jitter}")  # fmt: skip
        if not self.image_size:
            self.image_size = IMAGE_SIZES[self.preset]
        if self.image_size % PRESETS[self.preset].patch_size:
            raise UserError(
                f"--image-size {self.image_size} is not a multiple of {self.preset}'s patch size {PRESETS[self.preset].patch_size}"
            )
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
        if self.lr is not None:
            return self.lr
        return self.base_lr * (self.batch_size / self.base_batch if self.lr_scaling == "linear" else 1.0)

    def lr_warning(self) -> str | None:
        """One loud line when linear scaling leaves almost no learning rate (batch 32: 1e-3 x 32 / 4096 = 7.8e-6)."""
        if self.lr is not None or self.lr_scaling != "linear" or self.effective_lr * TINY_LR_FACTOR >= self.base_lr:
            return None
        return (f"WARNING: --lr-scaling linear gives a peak lr of {self.effective_lr:.2g} ({self.base_lr:g} x {self.batch_size} / "
                f"{self.base_batch}) for --batch-size {self.batch_size}, too small to learn much; the official recipe keeps "
                f"{self.base_lr:g} at any batch (--lr-scaling none, the default), or set the peak with --lr")  # fmt: skip

    @property
    def resolved_head(self) -> HeadConfig:
        """``head`` once ``__post_init__`` has filled in the preset's: never None."""
        assert self.head is not None
        return self.head

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "effective_lr": self.effective_lr}


def lr_at(step: int, config: PretrainConfig) -> float:
    """The learning rate of ``step`` (0-based), as l3m's fvcore schedule gives it at ``where = step / steps``."""
    where, warmup, peak = step / config.steps, config.warmup_fraction, config.effective_lr
    if where + WHERE_EPSILON <= warmup:
        t = where / warmup
        return peak * t + config.warmup_start_lr * (1 - t)
    t = (where - warmup) / (1 - warmup)
    return 0.5 * peak * (1 + math.cos(math.pi * t))


def is_decayed(name: str) -> bool:
    """Weight decay applies unless the name matches l3m's ``wd_exclude`` (biases, norms, position embeddings)."""
    return not any(fnmatchcase(name, pattern) for pattern in WD_EXCLUDE)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (decay if is_decayed(name) else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, config: PretrainConfig) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW at the peak lr, and a scheduler whose multiplier at step s is ``lr_at(s) / peak``."""
    optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.effective_lr, betas=config.betas, eps=1e-8)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_at(step, config) / config.effective_lr)
    return optimizer, scheduler
