"""Cells: the unit of evaluation (backbone x task x probe x seed), planned from a request.

:func:`plan_cells` expands the matrix and validates every name and option before anything runs;
each :class:`Cell` carries its resolved probe config, and :meth:`Cell.identity` computes once what
the cell is (``aimbench.identity``: key, hash, record name), reading the cards' content and
hashing a weights file's bytes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any

from aimbench.adapters.weight_sources import HF_PREFIX, URL_PREFIXES, is_remote, local_weights_file, resolve_source
from aimbench.cards.backbone_card import IN_MEMORY, BackboneSpec
from aimbench.cards.registry import Registry
from aimbench.cards.task_card import TaskSpec
from aimbench.dtypes import DTYPES
from aimbench.errors import UserError
from aimbench.hashing import file_sha256
from aimbench.identity import CellIdentity, content_hash, default_protocol
from aimbench.names import split_names
from aimbench.paths import PRETRAIN_TRUNK
from aimbench.probes import (
    OFFICIAL,
    REGISTRY,
    LayerSet,
    ProbeConfig,
    default_config,
    parse_layer_sets,
    probe_kind,
    protocol_label,
    resolve_config,
)

NAMED_WEIGHTS = ("random", "timm")  # --weights values that name a way of building weights, not a file


def default_layer_spec(windows: Any) -> str:
    """Every block on its own, plus the card's published windows (AIM: ``last`` and ``best``), so
    the paper's numbers always have a measured counterpart on the same blocks."""
    return ",".join(["all", *(name for name in ("last", "best") if name in windows)])


def weights_key(weights: str | None) -> str:
    """What a weights override is, for identity: ``""`` for the card's own weights, a named way
    (``random``, ``timm``, ``open_clip:TAG``) or remote source as written, and a local file (or
    pre-training run folder) by the SHA-256 of its content, so a renamed copy is the same weights
    and a retrained file at the same path is not."""
    if weights is None:
        return ""
    if _not_a_file(weights):
        return weights
    return f"sha256:{file_sha256(resolve_source(weights))}"


def _not_a_file(weights: str) -> bool:
    return weights in NAMED_WEIGHTS or weights.startswith("open_clip:") or is_remote(weights)


def weights_file(weights: str | None) -> Path | None:
    """The local file a weights override names, checked to hold weights before anything hashes or
    loads it; None for the card's own weights, a named way or a remote source."""
    return None if weights is None or _not_a_file(weights) else local_weights_file(weights)


def weights_name(weights: str | None, name: str | None = None) -> str:
    """The short name reports show for a weights override (``--name`` wins): a run folder's name,
    a file's stem, a hub file's repo/stem; ``""`` for the card's own weights."""
    if name is not None:
        if not name.strip() or any(ch in name for ch in "|@,"):
            raise UserError(f"--name '{name}' must be non-empty and free of '|', '@' and ','")
        if weights is None:
            raise UserError("--name names a --weights override; give --weights too")
        return name.strip()
    if weights is None:
        return ""
    if weights in NAMED_WEIGHTS:
        return weights
    if weights.startswith("open_clip:"):
        return weights.split(":", 1)[1]
    if weights.startswith(HF_PREFIX):
        _owner, _, rest = weights[len(HF_PREFIX) :].partition("/")
        repo, _, file = rest.partition("/")
        return f"{repo}/{Path(file).stem}"
    if weights.startswith(URL_PREFIXES):
        return Path(weights.split("?", 1)[0].rstrip("/")).stem
    path = Path(weights).expanduser()
    if path.is_dir() or path.name == PRETRAIN_TRUNK:  # an 'aimbench pretrain' run: its folder names it
        return (path if path.is_dir() else path.parent).resolve().name
    return path.stem


def _card_content(spec: Any) -> dict[str, Any]:
    content = dataclasses.asdict(spec)
    content.pop("card_path")
    content.pop("memory_gb", None)  # a resource hint: it sizes jobs, never changes a number
    content.pop("resample_keys", None)  # a permission: a load it allows records what it resampled in the weights' id
    return content


@dataclass(frozen=True)
class Cell:
    """One cell as planned: names, the layer spec, and the recipe resolved for its task."""

    backbone: str
    task: str
    probe: str
    seed: int
    _: KW_ONLY
    layers: str = "all"
    limit: int | None = None
    weights: str | None = None  # overrides the card's weights source
    probe_config: ProbeConfig | None = None  # None for released heads (nothing is trained)
    dtype: str = "fp32"  # the backbone's precision: it changes the numbers, so it is identity
    weights_name: str = ""  # what reports call a weights override (derived from it unless --name)
    default_layers: bool = False  # ``layers`` is the card's default spec: the key leaves it out
    protocol: str = ""  # the protocol card probe_config was resolved from ("": the probe's default card, filled in here)
    protocol_val_fraction: float | None = None  # released heads: the protocol card's (trained cells read their config's)
    # ``layers`` parsed against the card once, by plan_cells (released heads: the head's window); derived, so not identity
    layer_sets: tuple[LayerSet, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.protocol:
            object.__setattr__(self, "protocol", default_protocol(self.probe))
        # without a config: the shipped protocol card's values (plan_cells also applies the task card's overrides)
        if self.probe_config is None and probe_kind(self.probe).trains:
            object.__setattr__(self, "probe_config", default_config(self.probe, self.protocol))
        if self.weights is not None and not self.weights_name:
            object.__setattr__(self, "weights_name", weights_name(self.weights))

    @property
    def planned_sets(self) -> tuple[LayerSet, ...]:
        """``layer_sets``, which only :func:`plan_cells` fills in: a cell built another way has not been checked against its card."""
        if not self.layer_sets:
            raise ValueError(f"cell {self.backbone}|{self.task}|{self.probe} was not planned by plan_cells: its layer sets are unknown")
        return self.layer_sets

    @property
    def val_fraction(self) -> float | None:
        """Of train, carved for selection when the task has no official val split (the resolved recipe's)."""
        return self.probe_config.val_fraction if self.probe_config is not None else self.protocol_val_fraction

    def weights_key(self, registry: Registry) -> str:
        """The weights' identity: the override's (:func:`weights_key`), or for a backbone wrapped from
        an in-memory module, its state dict's content, so other weights under one name never replace it."""
        spec = registry.backbone(self.backbone)
        if self.weights is None and spec.adapter == IN_MEMORY:
            return f"sha256:{spec.sha256}"
        return weights_key(self.weights)

    def content(self, registry: Registry) -> dict[str, Any]:
        """Everything that defines the cell's number, as its hash reads it."""
        return {
            "backbone": _card_content(registry.backbone(self.backbone)),
            "task": _card_content(registry.task(self.task)),
            "probe": self.probe,
            "protocol": self.protocol,
            "probe_config": None if self.probe_config is None else self.probe_config.as_dict(),
            "seed": self.seed,
            "layers": self.layers,
            "limit": self.limit,
            "weights": self.weights_key(registry) or None,
            "dtype": self.dtype,
        }

    def identity(self, registry: Registry) -> CellIdentity:
        """What the cell is (a weights file is hashed here: once per plan, cached per size and mtime)."""
        trains = self.probe_config is not None
        return CellIdentity(
            backbone=self.backbone,
            task=self.task,
            probe=self.probe,
            seed=self.seed,
            layers=self.layers,
            limit=self.limit,
            dtype=self.dtype,
            weights_key=self.weights_key(registry),
            weights_name=self.weights_name,
            protocol=protocol_label(self.protocol, self.probe_config) if trains else "",  # released heads follow no protocol
            layers_in_key=trains and not self.default_layers,
            config_hash=content_hash(self.content(registry)),
        )


def parse_probes(spec: str | Sequence[str]) -> list[str]:
    """``linear,knn`` or a list of kinds: validated, duplicates dropped, order kept."""
    kinds = list(split_names(spec))
    for kind in kinds:
        if kind not in REGISTRY:
            raise UserError(f"unknown probe '{kind}'; available: {', '.join(REGISTRY)}")
    if not kinds:
        raise UserError(f"no probe given; one or more of {', '.join(REGISTRY)}")
    return list(dict.fromkeys(kinds))


def plan_cells(
    registry: Registry,
    backbones: Sequence[str],
    tasks: Sequence[str],
    probe: str | Sequence[str] = "linear",
    seeds: Sequence[int] = (0,),
    layers: str | None = None,
    limit: int | None = None,
    weights: str | None = None,
    overrides: Mapping[str, object] | None = None,
    dtype: str = "fp32",
    protocol: str | None = None,
    name: str | None = None,
) -> list[Cell]:
    """Expand the matrix (backbone x task x probe kind x seed), validating every name and option
    before anything runs. ``layers`` None is each card's default (``default_layer_spec``). Each
    trained cell's config is ``protocol`` (None: each kind's default card, ``DEFAULT_PROTOCOLS``)
    resolved for its task, with explicit ``overrides`` (protocol field -> value, e.g.
    ``{"epochs": 5}``) applied last; ``name`` names a weights override."""
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype '{dtype}'; one of {', '.join(DTYPES)}")
    kinds = parse_probes(probe)
    recipes = {kind: registry.protocol(protocol or default_protocol(kind)) for kind in kinds}
    if OFFICIAL in kinds:
        if len(kinds) > 1:
            raise UserError("--probe official evaluates released heads and takes --layers as head names; run it on its own")
        val_fraction = recipes[OFFICIAL].val_fraction.value
        return _plan_official(registry, backbones, tasks, seeds, layers or "all", limit, weights, dtype, name, val_fraction)
    specs, task_specs = _resolve(registry, backbones, tasks, seeds, weights, limit)
    label = weights_name(weights, name)
    configs = {(task.name, kind): resolve_config(recipes[kind], kind, task, overrides) for task in task_specs for kind in kinds}
    cells = []
    for spec in specs:
        spec_layers = layers or default_layer_spec(spec.windows)
        sets = tuple(parse_layer_sets(spec_layers, spec.depth, spec.windows))  # fails now, not after loading data
        cells += [
            Cell(
                spec.name,
                task.name,
                kind,
                seed,
                layers=spec_layers,
                limit=limit,
                weights=weights,
                probe_config=configs[task.name, kind],
                dtype=dtype,
                weights_name=label,
                default_layers=layers is None,
                protocol=recipes[kind].name,
                layer_sets=sets,
            )
            for task in task_specs
            for kind in kinds
            for seed in seeds
        ]
    return cells


def _resolve(
    registry: Registry, backbones: Sequence[str], tasks: Sequence[str], seeds: Sequence[int], weights: str | None, limit: int | None
) -> tuple[list[BackboneSpec], list[TaskSpec]]:
    """The cards of a matrix, every option checked first: an empty list would plan 0 cells and
    'succeed' doing nothing, a file that is no weights would fail only once a job loads it."""
    for option, names, what in (("--backbone", backbones, "backbone"), ("--tasks", tasks, "task"), ("--seed", seeds, "seed")):
        if not names:
            raise UserError(f"{option} names no {what}; give one or more, comma-separated")
    if weights is not None and len(backbones) != 1:
        raise UserError("--weights applies to exactly one backbone")
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be a positive number of images, got {limit}")
    weights_file(weights)  # a missing file, or one holding no weights, fails now, not in a job
    return [registry.backbone(name) for name in backbones], registry.expand_tasks(tasks)


def _plan_official(
    registry: Registry, backbones: Sequence[str], tasks: Sequence[str], seeds: Sequence[int],
    layers: str, limit: int | None, weights: str | None, dtype: str, name: str | None, val_fraction: float | None,
) -> list[Cell]:  # fmt: skip
    """One cell per released head; ``layers`` names heads (``all`` = every head of the card)."""
    specs, task_specs = _resolve(registry, backbones, tasks, seeds, weights, limit)
    label = weights_name(weights, name)
    cells = []
    for spec in specs:
        if not spec.official_probes:
            raise UserError(f"backbone '{spec.name}' has no released probe heads (its card lists no official_probes)")
        names = list(spec.official_probes) if layers == "all" else list(split_names(layers))
        for head in names:
            if head not in spec.official_probes:
                raise UserError(f"backbone '{spec.name}' has no released head '{head}'; it has: {', '.join(spec.official_probes)}")
        cells += [
            Cell(
                spec.name,
                task.name,
                f"{OFFICIAL}:{head}",
                seed,
                layers=head,
                limit=limit,
                weights=weights,
                dtype=dtype,
                weights_name=label,
                protocol_val_fraction=val_fraction,
                layer_sets=tuple(parse_layer_sets(head, spec.depth, spec.windows)),  # the head's window
            )
            for head in names
            for task in task_specs
            for seed in seeds
        ]
    return cells
