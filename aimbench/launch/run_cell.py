"""Evaluate one cell end to end and write its record: the callable every launcher runs.

Order matters for cost and clarity: the task's data is resolved before the backbone is built
(missing data fails in a second, not after loading a 7B), features for every layer come from one
pass per split, and the record is written last and atomically, so an interrupted cell leaves
nothing behind and is simply run again on resume. Two probe paths share the record: linear
heads trained here (``linear``) and released heads evaluated as they are (``official:<head>``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from aimbench.adapters import load_backbone
from aimbench.adapters.base import Backbone
from aimbench.adapters.weights import load_source
from aimbench.cards.registry import Registry
from aimbench.cards.task_card import TaskSpec
from aimbench.data import TaskSplits, load_task
from aimbench.errors import UserError
from aimbench.launch.cells import OFFICIAL, Cell, parse_layers
from aimbench.probes.attentive import head_from_state_dict, score_head
from aimbench.probes.features import extract_pooled, feature_sources
from aimbench.probes.linear import LayerResult, ProbeResult, train_linear_probes
from aimbench.provenance import environment, resolve_device
from aimbench.store.records import new_record_header, record_path, write_record_atomic

# (stage description, total units) then advance(units); None means "no progress display"
StageCallback = Callable[[str, int], Callable[[int], None]]


@dataclass(frozen=True)
class RunOptions:
    """How to run cells; none of this changes a cell's numbers, so none of it is in its identity."""

    results_dir: Path
    data_root: Path | None = None
    card_dirs: tuple[Path, ...] = ()
    device: str = "auto"
    batch_size: int = 64
    workers: int = 0


def _no_progress(_: str, __: int) -> Callable[[int], None]:
    return lambda _: None


def _probe_linear(
    cell: Cell, backbone: Backbone, task: TaskSpec, splits: TaskSplits, options: RunOptions, stage: StageCallback
) -> tuple[ProbeResult, dict[str, Any]]:
    """Linear heads for every layer x token kind x lr from one feature pass; selection on val."""
    layers = parse_layers(cell.layers, backbone.depth)
    sources = feature_sources(backbone, layers)
    features = {}
    for name, images in (("train", splits.train), ("val", splits.val), ("test", splits.test)):
        advance = stage(f"{cell.backbone} · {cell.task} · features {name}", len(images))
        features[name] = extract_pooled(backbone, images, layers, options.batch_size, options.workers, advance)
    config = cell.probe_config
    advance = stage(f"{cell.backbone} · {cell.task} · {len(sources) * len(config.learning_rates)} heads", config.epochs)
    result = train_linear_probes(
        features["train"], features["val"], features["test"], sources, task.num_classes,
        config, cell.seed, backbone.device, on_epoch=lambda _: advance(1),
    )  # fmt: skip
    return result, config.as_dict()


def _probe_official(
    cell: Cell, backbone: Backbone, task: TaskSpec, splits: TaskSplits, options: RunOptions, stage: StageCallback
) -> tuple[ProbeResult, dict[str, Any]]:
    """A released attentive head on its layer window, as is: nothing is trained or selected."""
    official = backbone.spec.official_probes[cell.layers]
    state, info, path = load_source(official.weights, backbone.spec.card_path.parent, official.sha256)
    head = head_from_state_dict(state, backbone.heads, str(path))
    if head.linear.out_features != task.num_classes:
        raise UserError(f"head '{cell.layers}' of {cell.backbone} has {head.linear.out_features} classes, task '{task.name}' has {task.num_classes}")
    scores = {}
    for name, images in (("val", splits.val), ("test", splits.test)):
        advance = stage(f"{cell.backbone} · {cell.task} · released head {cell.layers} on {name}", len(images))
        scores[name] = score_head(backbone, head, images, official.layers, options.batch_size, options.workers, advance)
    window = official.layers
    result = LayerResult(window[-1], f"attentive:avg{window[0]}-{window[-1]}", None, None, scores["val"], scores["test"])
    config = {
        "kind": OFFICIAL, "head": cell.layers, "head_weights_id": info.id, "head_sha256": info.sha256,
        "window": list(window), "training": "none: the released head is evaluated as is", "selection": "none",
    }  # fmt: skip
    return ProbeResult(heads=[], layers=[result], best=result, last=result), config


def run_cell(cell: Cell, options: RunOptions, stage: StageCallback = _no_progress) -> Path:
    """Evaluate ``cell`` and return the path of its record."""
    started = time.perf_counter()
    registry = Registry.load(options.card_dirs)
    task = registry.task(cell.task)
    splits = load_task(task, options.data_root, cell.limit)
    device = resolve_device(options.device)
    torch.manual_seed(cell.seed)
    backbone = load_backbone(cell.backbone, weights=cell.weights, registry=registry, dtype=cell.dtype).to(device)
    probe = _probe_official if cell.probe.startswith(f"{OFFICIAL}:") else _probe_linear
    result, probe_config = probe(cell, backbone, task, splits, options, stage)

    spec = backbone.spec
    record = {
        **new_record_header(cell.key, cell.config_hash(registry)),
        "backbone": cell.backbone,
        "task": cell.task,
        "probe": cell.probe,
        "seed": cell.seed,
        "weights_id": backbone.weights.id,
        "weights_sha256": backbone.weights.sha256,
        "dtype": cell.dtype,
        "task_version": task.version,
        "dataset_source": splits.source,
        "dataset_revision": splits.revision,
        "split_policy": task.split_policy(),
        **{f"n_{name}": size for name, size in splits.sizes().items()},
        "layers_spec": cell.layers,
        "image_limit": cell.limit,
        "best_layer": result.best.layer,
        "best_token": result.best.token,
        "best_lr": result.best.lr,
        "best_val_top1": result.best.val_top1,
        "best_test_top1": result.best.test_top1,
        "last_layer": result.last.layer,
        "last_val_top1": result.last.val_top1,
        "last_test_top1": result.last.test_top1,
        "layers": [dataclasses.asdict(r) for r in result.layers],
        "heads": [dataclasses.asdict(h) for h in result.heads],
        "probe_config": probe_config,
        "backbone_info": {
            "family": spec.family,
            "adapter": spec.adapter,
            "arch": spec.arch,
            "depth": spec.depth,
            "dim": spec.dim,
            "heads": spec.heads,
            "card": str(spec.card_path),
            "license": spec.license,
            "preprocess": spec.preprocess.as_dict(),
            "features": backbone.provenance.as_dict(),
        },
        "task_info": {"num_classes": task.num_classes, "metric": task.metric, "card": str(task.card_path)},
        "environment": environment(device),
        "wall_time_s": round(time.perf_counter() - started, 3),
    }
    path = record_path(options.results_dir, cell.record_name(registry))
    write_record_atomic(path, record)
    return path
