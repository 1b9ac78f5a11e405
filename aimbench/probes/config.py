"""Probe hyper-parameters in the typed form the training code reads, kept free of torch so planning
and the CLI start fast. Every field is part of a cell's identity and is written into its record.

The values come from a protocol card (``protocols/*.toml``) resolved with the task card's and the
command line's overrides (:mod:`aimbench.probes.protocol`): these classes have no recipe defaults
of their own, so the card is the one place a recipe is written down. ``sources`` says where each
value came from; it documents the number but never changes it, so it is left out of
:meth:`as_dict` (the identity) and recorded beside it.

Learning rates are given for the config's ``base_batch_size`` (the batch of the recipe they come
from) and scaled linearly to the batch size actually used (``scaled_lr``); the record keeps both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from aimbench.cards.protocol_card import DATA_MODES
from aimbench.errors import UserError


@dataclass(frozen=True)
class Provenance:
    """Where one resolved value comes from: the source text, and which layer set it."""

    source: str
    origin: str  # "protocol" (the card), "task" (a task card override) or "cli" (an explicit option)


def scaled_lr(lr: float, config: LinearProbeConfig | AttentiveProbeConfig) -> float:
    return lr * config.batch_size / config.base_batch_size


def grid_points(config: LinearProbeConfig | AttentiveProbeConfig) -> list[tuple[float, float]]:
    """Every (learning rate, weight decay) of a trained probe's grid, lr-major: the order heads are listed in."""
    return [(lr, wd) for lr in config.learning_rates for wd in config.weight_decays]


def values(config: ProbeConfig) -> dict[str, Any]:
    """The config's fields with lists for tuples (JSON-ready), without ``sources``."""
    return {f.name: list(v) if isinstance(v := getattr(config, f.name), tuple) else v for f in fields(config) if f.name != "sources"}


def _check_trained(config: LinearProbeConfig | AttentiveProbeConfig) -> None:
    if config.data_mode not in DATA_MODES:
        raise UserError(f"unknown data mode '{config.data_mode}'; one of {', '.join(DATA_MODES)}")
    if config.data_mode == "cached" and config.augmentation != "none":
        raise UserError(f"{config.kind} probe: cached features are eval crops, augmentation must be 'none', got '{config.augmentation}'")


def _trained_grid(config: LinearProbeConfig | AttentiveProbeConfig) -> dict[str, Any]:
    """What every trained probe's record says about its grid, batch and optimisation."""
    return {
        **values(config),
        "kind": config.kind,
        "effective_batch_size": config.batch_size,
        "scaled_learning_rates": [scaled_lr(lr, config) for lr in config.learning_rates],
        "optimizer": "adamw",
        "schedule": "linear warmup then cosine, per head",
    }


@dataclass(frozen=True)
class LinearProbeConfig:
    """BatchNorm (no affine) + linear heads; one head per (layer set x token kind x lr x wd)."""

    learning_rates: tuple[float, ...]
    weight_decays: tuple[float, ...]
    epochs: int
    batch_size: int
    base_batch_size: int  # the batch the learning rates are meant for
    warmup_fraction: float  # of all steps, linear from 0, then cosine to 0
    grad_clip: float | None  # max gradient norm of each head, None: no clipping
    no_weight_decay: tuple[str, ...]  # parameters ("weight", "bias") trained without weight decay
    data_mode: str  # "cached" eval-crop features, or "online": augmented views through the backbone each step
    augmentation: str  # online only ("none" when cached); see protocol_card.AUGMENTATIONS
    min_crop_scale: float
    grid_search: str  # "halving": each layer set halves its heads by val at fixed points (probes/halving.py) | "full"
    head_precision: str  # "bf16": training products in bf16 (fp32 weights, optimizer, softmax) | "fp32"
    val_fraction: float | None  # of train, for selection, when the task has no official val split
    sources: Mapping[str, Provenance] = field(default_factory=dict, compare=False, repr=False)

    kind = "linear"

    def __post_init__(self) -> None:
        _check_trained(self)

    def as_dict(self) -> dict[str, Any]:
        return {
            **_trained_grid(self),
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


@dataclass(frozen=True)
class KnnProbeConfig:
    """Weighted cosine kNN (DINO's protocol) on the cached pooled features; one head per k."""

    ks: tuple[int, ...]
    temperature: float
    val_fraction: float | None
    sources: Mapping[str, Provenance] = field(default_factory=dict, compare=False, repr=False)

    kind = "knn"

    def as_dict(self) -> dict[str, Any]:
        return {
            **values(self),
            "kind": self.kind,
            "metric": "cosine",
            "weighting": "exp(similarity / temperature)",
            "features": "cached fp16 pooled block outputs, L2-normalised; a window is the mean of its blocks",
            "selection": "per layer set: best val score over token kind x k; test scored for selected heads only",
        }


@dataclass(frozen=True)
class AttentiveProbeConfig:
    """AIM's attentive probe heads, one per (layer set x lr x wd), trained online on augmented
    views with the frozen backbone run once per batch for all of them."""

    learning_rates: tuple[float, ...]
    weight_decays: tuple[float, ...]
    epochs: int
    batch_size: int
    base_batch_size: int
    warmup_fraction: float
    grad_clip: float | None
    no_weight_decay: tuple[str, ...]  # among Apple's head names: cls_token, k.weight, v.weight, linear.weight, linear.bias
    data_mode: str  # "online", or "cached": token maps extracted once, reused by every epoch and run
    augmentation: str
    min_crop_scale: float
    val_fraction: float | None
    sources: Mapping[str, Provenance] = field(default_factory=dict, compare=False, repr=False)
    micro_batch: int = 64  # heads run forward/backward on this many images at a time (memory, not a recipe field)

    kind = "attentive"

    def __post_init__(self) -> None:
        _check_trained(self)

    def as_dict(self) -> dict[str, Any]:
        return {
            **_trained_grid(self),
            "head": "BatchNorm1d(affine=False) over tokens, one unprojected query, bias-free k/v, trunk heads, linear",
            "tokens": "patch tokens; a window is the mean of its raw block outputs",
            "data": (
                "online: augmented views, backbone (in the cell's dtype) under inference mode each step"
                if self.data_mode == "online"
                else "cached: eval-crop patch-token maps in fp16, extracted once and reused by every epoch"
            )
            + "; heads trained in bf16 autocast on GPU, val and test scored in fp32",
            "selection": "per layer set: best val score over lr x wd; test scored for selected heads only",
        }


ProbeConfig = LinearProbeConfig | KnnProbeConfig | AttentiveProbeConfig
