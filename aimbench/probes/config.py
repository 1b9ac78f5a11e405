"""Probe hyper-parameters and their documented defaults, kept free of torch so planning and the
CLI start fast. Every field is part of a cell's identity and is written into its record.

Learning rates are given for the config's ``base_batch_size`` (the batch of the recipe they come
from) and scaled linearly to the batch size actually used (``scaled_lr``); the record keeps both.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from aimbench.errors import UserError

PROBE_KINDS = ("linear", "knn", "attentive", "official")  # official: released heads, one cell per head
DATA_MODES = ("online", "cached")  # augmented views through the backbone each step, or eval-crop features cached once


def _check_data_mode(mode: str) -> None:
    if mode not in DATA_MODES:
        raise UserError(f"unknown data mode '{mode}'; one of {', '.join(DATA_MODES)}")


def scaled_lr(lr: float, config: LinearProbeConfig | AttentiveProbeConfig) -> float:
    return lr * config.batch_size / config.base_batch_size


def grid_points(config: LinearProbeConfig | AttentiveProbeConfig) -> list[tuple[float, float]]:
    """Every (learning rate, weight decay) of a trained probe's grid, lr-major: the order heads are listed in."""
    return [(lr, wd) for lr in config.learning_rates for wd in config.weight_decays]


def _trained_grid(config: LinearProbeConfig | AttentiveProbeConfig) -> dict[str, Any]:
    """What every trained probe's record says about its grid, batch and optimisation."""
    return {
        **asdict(config),
        "kind": config.kind,
        "learning_rates": list(config.learning_rates),
        "weight_decays": list(config.weight_decays),
        "effective_batch_size": config.batch_size,
        "scaled_learning_rates": [scaled_lr(lr, config) for lr in config.learning_rates],
        "optimizer": "adamw",
        "schedule": "linear warmup then cosine, per head",
    }


@dataclass(frozen=True)
class LinearProbeConfig:
    """BatchNorm (no affine) + linear heads; one head per (layer set x token kind x lr x wd)."""

    learning_rates: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)
    weight_decays: tuple[float, ...] = (0.0, 1e-4, 1e-2)
    epochs: int = 100
    batch_size: int = 256
    base_batch_size: int = 256  # the batch the learning rates are meant for
    warmup_fraction: float = 0.05  # of all steps, linear from 0, then cosine to 0
    data_mode: str = "cached"  # or "online": augmented views through the backbone each step
    augmentation: str | None = None  # online only; None: the task card's (default rrc_flip)
    min_crop_scale: float = 0.08

    kind = "linear"

    def __post_init__(self) -> None:
        _check_data_mode(self.data_mode)

    def as_dict(self) -> dict[str, Any]:
        return {
            **_trained_grid(self),
            "feature_norm": "batchnorm without affine, with the eval-crop train set's statistics",
            "features": (
                "cached fp16 pooled block outputs"
                if self.data_mode == "cached"
                else "online: pooled block outputs of augmented views, backbone run each step"
            ) + "; a window is the mean of its blocks",
            "selection": "per layer set: best val score over token kind x lr x wd; test scored for selected heads only",
        }


@dataclass(frozen=True)
class KnnProbeConfig:
    """Weighted cosine kNN (DINO's protocol) on the cached pooled features; one head per k."""

    ks: tuple[int, ...] = (10, 20, 100, 200)
    temperature: float = 0.07

    kind = "knn"

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "kind": self.kind,
            "ks": list(self.ks),
            "metric": "cosine",
            "weighting": "exp(similarity / temperature)",
            "features": "cached fp16 pooled block outputs, L2-normalised; a window is the mean of its blocks",
            "selection": "per layer set: best val score over token kind x k; test scored for selected heads only",
        }


@dataclass(frozen=True)
class AttentiveProbeConfig:
    """AIM's attentive probe heads, one per (layer set x lr x wd), trained online on augmented
    views with the frozen backbone run once per batch for all of them."""

    learning_rates: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
    weight_decays: tuple[float, ...] = (0.1,)
    epochs: int = 100
    batch_size: int = 512
    base_batch_size: int = 512  # the recipe's lrs are for batch 512
    micro_batch: int = 64  # heads run forward/backward on this many images at a time (memory, not numbers)
    warmup_fraction: float = 0.05
    augmentation: str | None = None  # None: the task card's (default rrc_flip), "none" when cached; see task_card.AUGMENTATIONS
    data_mode: str = "online"  # or "cached": token maps extracted once, reused by every epoch and run
    min_crop_scale: float = 0.08

    kind = "attentive"

    def __post_init__(self) -> None:
        _check_data_mode(self.data_mode)

    def as_dict(self) -> dict[str, Any]:
        return {
            **_trained_grid(self),
            "head": "BatchNorm1d(affine=False) over tokens, one unprojected query, bias-free k/v, trunk heads, linear",
            "tokens": "patch tokens; a window is the mean of its raw block outputs",
            "data": (
                "online: augmented views, backbone (in the cell's dtype) under inference mode each step"
                if self.data_mode == "online"
                else "cached: eval-crop patch-token maps in fp16, extracted once and reused by every epoch"
            ) + "; heads in bf16 autocast on GPU",
            "selection": "per layer set: best val score over lr x wd; test scored for selected heads only",
        }


ProbeConfig = LinearProbeConfig | KnnProbeConfig | AttentiveProbeConfig


def default_config(kind: str) -> ProbeConfig:
    return {"linear": LinearProbeConfig, "knn": KnnProbeConfig, "attentive": AttentiveProbeConfig}[kind]()
