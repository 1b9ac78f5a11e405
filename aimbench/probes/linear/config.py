"""The linear probe's recipe: BatchNorm (no affine) + linear heads on pooled block outputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aimbench.probes.config import TrainedProbeConfig


@dataclass(frozen=True, kw_only=True)
class LinearProbeConfig(TrainedProbeConfig):
    """BatchNorm (no affine) + linear heads; one head per (layer set x token kind x lr x wd)."""

    grid_search: str  # "halving": each layer set halves its heads by val at fixed points (linear/halving.py) | "full"
    head_precision: str  # "bf16": training products in bf16 (fp32 weights, optimizer, softmax) | "fp32"

    kind = "linear"

    def as_dict(self) -> dict[str, Any]:
        return {
            **super().as_dict(),
            "feature_norm": "batchnorm without affine, with the eval-crop train set's statistics",
            "features": (
                "cached fp16 pooled block outputs"
                if self.data_mode == "cached"
                else "online: pooled block outputs of augmented views, backbone run each step"
            )
            + "; a window is the mean of its blocks",
            "precision": (
                "training products in bf16 (fp32 weights, fused AdamW state and softmax); every score in fp32"
                if self.head_precision == "bf16"
                else "fp32 throughout (fused AdamW)"
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
