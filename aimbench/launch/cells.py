"""Cells: the unit of evaluation (backbone x task x probe x seed) and its identity.

A cell's identity is everything that defines its number: the content of the backbone and task
cards (not their paths), the weights, the layer selection, the image limit, the protocol and the
probe config resolved from it, and the seed. Its hash names the record file, so finished cells
are found and skipped without running anything, and a changed card or option never reuses a
stale result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aimbench.cards.backbone_card import BackboneSpec
from aimbench.cards.registry import Registry
from aimbench.cards.task_card import TaskSpec
from aimbench.dtypes import DTYPES
from aimbench.errors import UserError
from aimbench.hashing import file_sha256
from aimbench.probes.config import PROBE_KINDS, ProbeConfig
from aimbench.probes.layer_sets import parse_layer_sets
from aimbench.probes.protocol import DEFAULT_PROTOCOL, default_config, resolve_config

OFFICIAL = "official"  # released heads, one cell per head ("official:<head>")


def _card_content(spec: Any) -> dict[str, Any]:
    content = dataclasses.asdict(spec)
    content.pop("card_path")
    content.pop("memory_gb", None)  # a resource hint: it sizes jobs, never changes a number
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
    probe_config: ProbeConfig | None = None  # None for released heads (nothing is trained)
    dtype: str = "fp32"  # the backbone's precision: it changes the numbers, so it is identity
    protocol: str = DEFAULT_PROTOCOL  # the protocol card probe_config was resolved from

    def __post_init__(self) -> None:
        # without a config: the shipped protocol card's values (plan_cells also applies the task card's overrides)
        if self.probe_config is None and self.probe in PROBE_KINDS and self.probe != OFFICIAL:
            object.__setattr__(self, "probe_config", default_config(self.probe, self.protocol))

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
            "protocol": self.protocol,
            "probe_config": None if self.probe_config is None else self.probe_config.as_dict(),
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


def parse_probes(spec: str | Sequence[str]) -> list[str]:
    """``linear,knn`` or a list of kinds: validated, duplicates dropped, order kept."""
    kinds = [k.strip() for k in (spec.split(",") if isinstance(spec, str) else spec) if k.strip()]
    for kind in kinds:
        if kind not in PROBE_KINDS:
            raise UserError(f"unknown probe '{kind}'; available: {', '.join(PROBE_KINDS)}")
    if not kinds:
        raise UserError(f"no probe given; one or more of {', '.join(PROBE_KINDS)}")
    return list(dict.fromkeys(kinds))


def plan_cells(
    registry: Registry,
    backbones: Sequence[str],
    tasks: Sequence[str],
    probe: str | Sequence[str] = "linear",
    seeds: Sequence[int] = (0,),
    layers: str = "all",
    limit: int | None = None,
    weights: str | None = None,
    overrides: Mapping[str, object] | None = None,
    dtype: str = "fp32",
    protocol: str = DEFAULT_PROTOCOL,
) -> list[Cell]:
    """Expand the matrix (backbone x task x probe kind x seed), validating every name and option
    before anything runs. Each trained cell's config is ``protocol`` resolved for its task, with
    explicit ``overrides`` (protocol field -> value, e.g. ``{"epochs": 5}``) applied last."""
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype '{dtype}'; one of {', '.join(DTYPES)}")
    recipe = registry.protocol(protocol)
    kinds = parse_probes(probe)
    if OFFICIAL in kinds:
        if len(kinds) > 1:
            raise UserError("--probe official evaluates released heads and takes --layers as head names; run it on its own")
        return _plan_official(registry, backbones, tasks, seeds, layers, limit, weights, dtype)
    specs, task_specs = _resolve(registry, backbones, tasks, weights, limit)
    for spec in specs:
        parse_layer_sets(layers, spec.depth, spec.windows)  # fail now, not after loading data
    configs = {(task.name, kind): resolve_config(recipe, kind, task, overrides) for task in task_specs for kind in kinds}
    return [
        Cell(spec.name, task.name, kind, seed, layers, limit, weights, configs[task.name, kind], dtype, protocol)
        for spec in specs
        for task in task_specs
        for kind in kinds
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
