"""The linear probe's recipe: linear heads on pooled block outputs, the lr x wd grid trained together.

Two published shapes of it are written as protocol cards: aim-v1's (aimbench's own: BatchNorm
without affine, zero init, AdamW, 100 passes over the train split) and DINOv2's
(``protocols/dinov2-linear.toml``: raw features through the backbone's final norm, N(0, 0.01^2)
init, SGD with momentum, a fixed number of steps). The fields that tell them apart are data here,
so both train through the same heads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from aimbench.cards.backbone_card import CLS, CONCAT, PATCH_MEAN
from aimbench.probes.config import TrainedProbeConfig


@dataclass(frozen=True, kw_only=True)
class LinearProbeConfig(TrainedProbeConfig):
    """Linear heads, one per (layer set x token kind x lr x wd)."""

    grid_search: str  # "halving": each layer set halves its heads by val at fixed points (linear/halving.py) | "full"
    head_precision: str  # "bf16": training products in bf16 (fp32 weights, optimizer, softmax) | "fp32"
    optimizer: str  # "adamw" | "sgd" (with ``momentum``)
    momentum: float  # SGD's momentum; unused by AdamW
    init_std: float  # heads' weights drawn from N(0, init_std^2) per head, biases zero; 0: zeros
    feature_norm: str  # "batchnorm": inputs standardised with the eval-crop train set's statistics | "none"
    block_norm: str  # "raw" block outputs | "final": each block's tokens through the backbone's final norm, then pooled
    token_kinds: tuple[str, ...]  # what each layer set's heads read: patch_mean, cls, patch_mean+cls
    epoch_length: int  # optimizer steps per epoch; 0: one pass over the train split

    kind = "linear"
    # added with dinov2-linear, at what earlier records trained with (aim-v1's recipe)
    ADDED_FIELDS: ClassVar[Mapping[str, Any]] = {
        "optimizer": "adamw", "momentum": 0.0, "init_std": 0.0, "feature_norm": "batchnorm", "block_norm": "raw",
        "token_kinds": (PATCH_MEAN, CLS, CONCAT), "epoch_length": 0,
    }  # fmt: skip

    def steps_per_epoch(self, train_size: int) -> int:
        """Optimizer steps an epoch makes: the card's epoch length, else a pass over the train split
        (none on an empty split: there is nothing to step on)."""
        return (self.epoch_length or math.ceil(train_size / self.batch_size)) if train_size else 0

    def total_steps(self, train_size: int) -> int:
        return self.epochs * self.steps_per_epoch(train_size)

    def training_images(self, train_size: int) -> int:
        """Images the heads train on over the schedule: epochs passes, or every step's batch."""
        return self.epochs * (train_size if self.epoch_length == 0 or train_size == 0 else self.epoch_length * self.batch_size)

    @property
    def optimizer_states(self) -> int:
        """Tensors of optimizer state per parameter: AdamW's two moments, SGD's momentum buffer (none without momentum)."""
        return 2 if self.optimizer == "adamw" else int(self.momentum > 0)

    def as_dict(self) -> dict[str, Any]:
        optimizer = "AdamW" if self.optimizer == "adamw" else "SGD"
        return {
            **super().as_dict(),
            "feature_norm": (
                "batchnorm without affine, with the eval-crop train set's statistics" if self.feature_norm == "batchnorm" else "none"
            ),
            "features": (
                "cached fp16 pooled block outputs"
                if self.data_mode == "cached"
                else "online: pooled block outputs of augmented views, backbone run each step"
            )
            + ("" if self.block_norm == "raw" else ", each block's tokens through the backbone's final norm before pooling")
            + "; a window is the mean of its blocks",
            "optimizer": "adamw" if self.optimizer == "adamw" else f"sgd, momentum {self.momentum:g}",
            **({"init": f"weights N(0, {self.init_std:g}^2) per head, biases zero"} if self.init_std else {}),
            "precision": (
                f"training products in bf16 (fp32 weights, fused {optimizer} state and softmax); every score in fp32"
                if self.head_precision == "bf16"
                else f"fp32 throughout (fused {optimizer})"
            ),
            "selection": "per layer set: best val score over token kind x lr x wd"
            + (
                " among the heads trained to the end; successive halving on val stops the worse half of each set's heads"
                " after 1/16, 1/8, 1/4 and 1/2 of the steps"
                if self.grid_search == "halving"
                else ""
            )
            + "; test scored for selected heads only",
        }
