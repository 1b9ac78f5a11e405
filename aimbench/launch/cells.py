"""Cells: the unit of evaluation (backbone x task x probe x seed) and its identity.

A cell's identity is everything that defines its number: the content of the backbone and task
cards (not their paths), the weights, the layer selection, the image limit, the probe config
and the seed. Its hash names the record file, so finished cells are found and skipped without
running anything, and a changed card or option never reuses a stale result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aimbench.cards.backbone_card import BackboneSpec
from aimbench.cards.registry import Registry
from aimbench.cards.task_card import TaskSpec
from aimbench.dtypes import DTYPES
from aimbench.errors import UserError
from aimbench.hashing import file_sha256
from aimbench.probes.config import LinearProbeConfig

PROBES = ("linear", "official")  # official: released heads, one cell per head ("official:<head>")
OFFICIAL = "official"


def parse_layers(spec: str, depth: int) -> list[int]:
    """``all`` | ``last`` | comma-separated block indices (negative counts from the end)."""
    if spec == "all":
        return list(range(depth))
    if spec == "last":
        return [depth - 1]
    layers = set()
    for part in spec.split(","):
        try:
            index = int(part.strip())
        except ValueError:
            raise UserError(f"bad --layers '{spec}': use all, last, or block indices like 0,5,-1") from None
        if not -depth <= index < depth:
            raise UserError(f"bad --layers '{spec}': block {index} is outside 0..{depth - 1} (depth {depth})")
        layers.add(index % depth)
    return sorted(layers)


def _card_content(spec: Any) -> dict[str, Any]:
    content = dataclasses.asdict(spec)
    content.pop("card_path")
    return content


@dataclass(frozen=True)
class Cell:
    backbone: str
    task: str
    probe: str
    seed: int
    layers: str = "all"
    limit: int | None = None
    weights: str | None = None  # overrides the card's weights source
    probe_config: LinearProbeConfig = field(default_factory=LinearProbeConfig)
    dtype: str = "fp32"  # the backbone's precision: it changes the numbers, so it is identity

    @property
    def key(self) -> str:
        return f"{self.backbone}|{self.task}|{self.probe}|{self.seed}"

    def identity(self, registry: Registry) -> dict[str, Any]:
        weights = self.weights
        if weights not in (None, "random", "timm") and Path(weights).is_file():
            weights = f"{weights}#sha256={file_sha256(Path(weights))}"
        return {
            "backbone": _card_content(registry.backbone(self.backbone)),
            "task": _card_content(registry.task(self.task)),
            "probe": self.probe,
            "probe_config": self.probe_config.as_dict(),
            "seed": self.seed,
            "layers": self.layers,
            "limit": self.limit,
            "weights": weights,
            "dtype": self.dtype,
        }

    def config_hash(self, registry: Registry) -> str:
        blob = json.dumps(self.identity(registry), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def record_name(self, registry: Registry) -> str:
        return f"{self.backbone}__{self.task}__{self.probe}__seed{self.seed}__{self.config_hash(registry)}.json"


def plan_cells(
    registry: Registry,
    backbones: Sequence[str],
    tasks: Sequence[str],
    probe: str = "linear",
    seeds: Sequence[int] = (0,),
    layers: str = "all",
    limit: int | None = None,
    weights: str | None = None,
    probe_config: LinearProbeConfig | None = None,
    dtype: str = "fp32",
) -> list[Cell]:
    """Expand the matrix, validating every name and option before anything runs."""
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype '{dtype}'; one of {', '.join(DTYPES)}")
    if probe not in PROBES:
        raise UserError(f"unknown probe '{probe}'; available: {', '.join(PROBES)}")
    if probe == OFFICIAL:
        return _plan_official(registry, backbones, tasks, seeds, layers, limit, weights, dtype)
    specs, task_specs = _resolve(registry, backbones, tasks, weights, limit)
    for spec in specs:
        parse_layers(layers, spec.depth)  # fail now, not after loading data
    config = probe_config or LinearProbeConfig()
    return [
        Cell(spec.name, task.name, probe, seed, layers, limit, weights, config, dtype)
        for spec in specs
        for task in task_specs
        for seed in seeds
    ]


def _resolve(
    registry: Registry, backbones: Sequence[str], tasks: Sequence[str], weights: str | None, limit: int | None
) -> tuple[list[BackboneSpec], list[TaskSpec]]:
    if weights is not None and len(backbones) != 1:
        raise UserError("--weights applies to exactly one backbone")
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be a positive number of images, got {limit}")
    return [registry.backbone(name) for name in backbones], registry.expand_tasks(tasks)


def _plan_official(
    registry: Registry, backbones: Sequence[str], tasks: Sequence[str], seeds: Sequence[int],
    layers: str, limit: int | None, weights: str | None, dtype: str,
) -> list[Cell]:  # fmt: skip
    """One cell per released head; ``layers`` names heads (``all`` = every head of the card)."""
    specs, task_specs = _resolve(registry, backbones, tasks, weights, limit)
    cells = []
    for spec in specs:
        if not spec.official_probes:
            raise UserError(f"backbone '{spec.name}' has no released probe heads (its card lists no official_probes)")
        names = list(spec.official_probes) if layers == "all" else [n.strip() for n in layers.split(",")]
        for name in names:
            if name not in spec.official_probes:
                raise UserError(f"backbone '{spec.name}' has no released head '{name}'; it has: {', '.join(spec.official_probes)}")
        cells += [
            Cell(spec.name, task.name, f"{OFFICIAL}:{name}", seed, name, limit, weights, dtype=dtype)
            for name in names
            for task in task_specs
            for seed in seeds
        ]
    return cells
