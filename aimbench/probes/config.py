"""Probe hyper-parameters in the typed form the training code reads: the base every kind's config
extends, kept free of torch so planning and the CLI start fast. Every field is part of a cell's
identity and is written into its record.

The values come from a protocol card (``protocols/*.toml``) resolved with the task card's and the
command line's overrides (:mod:`aimbench.probes.protocol`): the config classes have no recipe
defaults of their own, so the card is the one place a recipe is written down. ``sources`` says
where each value came from; it documents the number but never changes it, so it is left out of
:meth:`ProbeConfig.as_dict` (the identity) and recorded beside it.

Learning rates are given for the config's ``base_batch_size`` (the batch of the recipe they come
from) and scaled linearly to the batch size actually used (``scaled_lr``); the record keeps both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from aimbench.errors import UserError


@dataclass(frozen=True)
class Provenance:
    """Where one resolved value comes from: the source text, and which layer set it."""

    source: str
    origin: str  # "protocol" (the card), "task" (a task card override) or "cli" (an explicit option)


@dataclass(frozen=True, kw_only=True)
class ProbeConfig:
    """What every kind's config has: the val fraction selection reads (None: the task's official
    val split) and where each value came from. Subclasses add their recipe's fields and say in
    :meth:`as_dict` what the record shows of them."""

    val_fraction: float | None  # of train, for selection, when the task has no official val split
    sources: Mapping[str, Provenance] = field(default_factory=dict, compare=False, repr=False)

    kind: ClassVar[str]

    def as_dict(self) -> dict[str, Any]:
        """The config as identity and record keep it: :func:`values` plus what the kind says of its recipe."""
        return {**values(self), "kind": self.kind}


@dataclass(frozen=True, kw_only=True)
class TrainedProbeConfig(ProbeConfig):
    """The fields every trained probe (heads on a lr x wd grid, AdamW, warmup + cosine) shares."""

    learning_rates: tuple[float, ...]
    weight_decays: tuple[float, ...]
    epochs: int
    batch_size: int
    base_batch_size: int  # the batch the learning rates are meant for
    warmup_fraction: float  # of all steps, linear from 0, then cosine to 0
    grad_clip: float | None  # max gradient norm of each head, None: no clipping
    no_weight_decay: tuple[str, ...]  # parameters trained without weight decay (protocol_card.PARAMETERS)
    data_mode: str  # "cached" eval-crop features, or "online": augmented views through the backbone each step
    augmentation: str  # online only ("none" when cached); see protocol_card.AUGMENTATIONS
    min_crop_scale: float

    def __post_init__(self) -> None:
        # the card validated each field; this rule spans two of them (resolve_config sets it for cached features)
        if self.data_mode == "cached" and self.augmentation != "none":
            raise UserError(f"{self.kind} probe: cached features are eval crops, augmentation must be 'none', got '{self.augmentation}'")

    # Fields a kind gained after its records existed, at the values that reproduce the training those
    # records had: left out of as_dict (the identity) where they hold them, so those records keep
    # their hashes. The protocol record (probe_config.protocol) still lists every field with its
    # value and source.
    ADDED_FIELDS: ClassVar[Mapping[str, Any]] = {}

    def as_dict(self) -> dict[str, Any]:
        """What every trained probe's record says about its grid, batch and optimisation."""
        recipe = {
            name: value
            for name, value in super().as_dict().items()
            if name not in self.ADDED_FIELDS or getattr(self, name) != self.ADDED_FIELDS[name]
        }
        return {
            **recipe,
            "effective_batch_size": self.batch_size,
            "scaled_learning_rates": [scaled_lr(lr, self) for lr in self.learning_rates],
            "optimizer": "adamw",
            "schedule": "linear warmup then cosine, per head",
        }


def scaled_lr(lr: float, config: TrainedProbeConfig) -> float:
    return lr * config.batch_size / config.base_batch_size


def grid_points(config: TrainedProbeConfig) -> list[tuple[float, float]]:
    """Every (learning rate, weight decay) of a trained probe's grid, lr-major: the order heads are listed in."""
    return [(lr, wd) for lr in config.learning_rates for wd in config.weight_decays]


def values(config: ProbeConfig) -> dict[str, Any]:
    """The config's fields with lists for tuples (JSON-ready), without ``sources``."""
    return {f.name: list(v) if isinstance(v := getattr(config, f.name), tuple) else v for f in fields(config) if f.name != "sources"}
