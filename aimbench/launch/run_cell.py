"""Evaluate one cell end to end and write its record: the callable every launcher runs.

Order matters for cost and clarity: the task's data is resolved before the backbone is built
(missing data fails in a second, not after loading a 7B), features for every layer come from one
pass per split, and the record is written last and atomically, so an interrupted cell leaves
nothing behind and is simply run again on resume. Two probe paths share the record: heads trained
and selected here (``linear``, ``knn``, from cached pooled features) and released heads evaluated
as they are (``official:<head>``).
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
from aimbench.launch.cell_progress import STATE_DIR, ProgressFile, progress_path
from aimbench.launch.cells import OFFICIAL, Cell
from aimbench.launch.options import RunOptions
from aimbench.probes.attentive import head_from_state_dict
from aimbench.probes.attentive_training import CachedTokens, head_predictions, train_attentive_probes
from aimbench.probes.checkpoint import Checkpointing, drop_state
from aimbench.probes.config import AttentiveProbeConfig, KnnProbeConfig, grid_points
from aimbench.probes.feature_cache import Extraction, SplitKey, cached_pooled, cached_tokens
from aimbench.probes.features import feature_sources, head_inputs, probe_inputs
from aimbench.probes.knn import knn_probes
from aimbench.probes.layer_sets import blocks_needed, parse_layer_sets
from aimbench.probes.linear import train_linear_probes
from aimbench.probes.memory import plan_passes
from aimbench.probes.metrics import score_predictions, secondary_scores
from aimbench.probes.protocol import protocol_record
from aimbench.probes.results import LayerResult, ProbeResult, summarise
from aimbench.probes.views import online_probe_inputs
from aimbench.provenance import environment, resolve_device
from aimbench.store.records import new_record_header, record_path, write_record_atomic

# (stage description, total units) then advance(units); None means "no progress display"
StageCallback = Callable[[str, int], Callable[[int], None]]


def _no_progress(_: str, __: int) -> Callable[[int], None]:
    return lambda _: None


def _to_absolute(advance: Callable[[int], None]) -> Callable[[int], None]:
    """A callback taking units done so far (a resumed run starts past 0) that advances ``advance`` by the difference."""
    seen = [0]

    def reach(done: int) -> None:
        advance(done - seen[0])
        seen[0] = done

    return reach


@dataclass(frozen=True)
class Context:
    """Everything a probe path reads: the cell, its loaded inputs, and where its resume state lives."""

    cell: Cell
    backbone: Backbone
    task: TaskSpec
    splits: TaskSplits
    options: RunOptions
    stage: StageCallback
    state_path: Path  # resumable training state of this cell (deleted once its record exists)

    def progress(self, what: str, total: int) -> Callable[[int], None]:
        return self.stage(f"{self.cell.backbone} · {self.cell.task} · {what}", total)


def _split_progress(ctx: Context, what: str, images: int) -> tuple[Callable[[int], None], Callable[[], None]]:
    """(on_batch, on_cached) for one split's features: a bar that advances as batches are extracted,
    or, when every block comes from the cache, one that says "cached" and is full at once (never a
    bar frozen at 0/N while the probe trains)."""
    bar: list[Callable[[int], None]] = []

    def on_batch(done: int) -> None:
        if not bar:
            bar.append(ctx.progress(what, images))
        bar[0](done)

    return on_batch, lambda: ctx.progress(f"{what} (cached)", images)(images)


def _probe_pooled(ctx: Context) -> tuple[ProbeResult, dict[str, Any]]:
    """Linear or kNN heads for every layer set x token kind x grid point, on pooled features:
    cached (one backbone pass per split, ever), or for online linear probes augmented train views
    each step; linear training resumes from its checkpoint; selection on val only."""
    cell, backbone, task, splits, options = ctx.cell, ctx.backbone, ctx.task, ctx.splits, ctx.options
    sets = parse_layer_sets(cell.layers, backbone.depth, backbone.spec.windows)
    blocks = blocks_needed(sets)
    features, cache = {}, {}
    for name, images in (("train", splits.train), ("val", splits.val), ("test", splits.test)):
        how = Extraction(options.cache_dir, options.batch_size, options.workers, *_split_progress(ctx, f"features {name}", len(images)))
        pooled, stats = cached_pooled(backbone, images, blocks, SplitKey(name, splits.source, splits.revision), how)
        features[name], sources = probe_inputs(pooled, feature_sources(backbone, blocks), sets)
        cache = {k: cache.get(k, 0) + v for k, v in stats.items()}
    config = cell.probe_config
    if isinstance(config, KnnProbeConfig):
        inputs = len(head_inputs(sources))
        advance = ctx.progress(f"kNN over {inputs} inputs x {len(config.ks)} k", inputs)
        result = knn_probes(
            features["train"], features["val"], features["test"], sources, task.num_classes, config, task.metric,
            task.secondary_metrics, backbone.device, on_source=lambda _: advance(1),
        )  # fmt: skip
    else:
        online = None
        if config.data_mode == "online":  # train on augmented views; eval-crop features give stats, val and test
            online = online_probe_inputs(backbone, splits.train, sets, config.augmentation, config.min_crop_scale,
                                         cell.seed, config.batch_size, options.workers)  # fmt: skip
        reach = _to_absolute(ctx.progress("linear heads", config.epochs))
        result = train_linear_probes(
            features["train"], features["val"], features["test"], sources, task.num_classes,
            config, cell.seed, task.metric, task.secondary_metrics, backbone.device, on_epoch=lambda epoch: reach(epoch + 1),
            checkpoint=Checkpointing(ctx.state_path, ctx.state_path.stem, options.checkpoint_every), online=online,
        )  # fmt: skip
    return result, {**config.as_dict(), "feature_cache": cache}


def _memory_budget(options: RunOptions, device: torch.device) -> int | None:
    """Bytes the attentive heads may use: --memory-gb, else 90 % of the GPU's free memory, else no limit."""
    if options.memory_gb is not None:
        return int(options.memory_gb * 2**30)
    if device.type == "cuda":
        return int(0.9 * torch.cuda.mem_get_info(device)[0])
    return None


def _cached_token_maps(ctx: Context, blocks: list[int]) -> tuple[tuple[CachedTokens, ...], dict[str, Any]]:
    """Eval-crop token maps of every split from the feature cache (one backbone pass, ever)."""
    maps, totals = [], {}
    for name, images in (("train", ctx.splits.train), ("val", ctx.splits.val), ("test", ctx.splits.test)):
        how = Extraction(
            ctx.options.cache_dir, ctx.options.batch_size, ctx.options.workers, *_split_progress(ctx, f"token maps {name}", len(images))
        )
        blocks_of_split, stats = cached_tokens(ctx.backbone, images, blocks, SplitKey(name, ctx.splits.source, ctx.splits.revision), how)
        maps.append(CachedTokens(blocks_of_split))
        totals = {k: totals.get(k, 0) + v for k, v in stats.items()}
    return tuple(maps), {"feature_cache": totals}


def _probe_attentive(ctx: Context) -> tuple[ProbeResult, dict[str, Any]]:
    """Attentive heads for every layer set x lr x wd, trained online from one backbone pass per
    batch (more passes only when the heads do not fit the memory budget), checkpointed so a killed
    run resumes; selection on val."""
    cell, backbone, splits, config = ctx.cell, ctx.backbone, ctx.splits, ctx.cell.probe_config
    sets = parse_layer_sets(cell.layers, backbone.depth, backbone.spec.windows)
    grid = len(grid_points(config))
    plan = plan_passes(sets, backbone.dim, backbone.patch_tokens(), ctx.task.num_classes, grid, config.batch_size,
                       _memory_budget(ctx.options, backbone.device), config.micro_batch, backbone.heads)  # fmt: skip
    cached, cache = None, {}
    if config.data_mode == "cached":
        cached, cache = _cached_token_maps(ctx, blocks_needed(sets))
    steps = config.epochs * -(-len(splits.train) // config.batch_size)
    results = []
    for index, chunk in enumerate(plan.passes):
        what = f"attentive heads, pass {index + 1}/{len(plan.passes)}" if len(plan.passes) > 1 else "attentive heads"
        on_step = _to_absolute(ctx.progress(f"{what} ({len(chunk)} layer sets x {grid} lr x wd)", steps))
        state = ctx.state_path.with_name(f"{ctx.state_path.stem}.pass{index}.pt")
        # the identity names the pass's layer sets: a plan that changed (other free memory) never resumes a wrong state
        identity = f"{state.stem}:{','.join(layer_set.name for layer_set in chunk)}"
        checkpoint = Checkpointing(state, identity, ctx.options.checkpoint_every)
        results.append(train_attentive_probes(
            backbone, splits.train, splits.val, splits.test, chunk, ctx.task.num_classes, config, cell.seed, ctx.task.metric,
            ctx.task.secondary_metrics, checkpoint, ctx.options.batch_size, ctx.options.workers, on_step, cached,
        ))  # fmt: skip
    merged = summarise([h for r in results for h in r.heads], [layer for r in results for layer in r.layers])
    return merged, {**config.as_dict(), "passes": len(plan.passes), "memory_plan": plan.describe(), **cache}


def _probe_official(ctx: Context) -> tuple[ProbeResult, dict[str, Any]]:
    """A released attentive head on its layer window, as is: nothing is trained or selected."""
    cell, backbone, task, splits, options = ctx.cell, ctx.backbone, ctx.task, ctx.splits, ctx.options
    official = backbone.spec.official_probes[cell.layers]
    state, info, path = load_source(official.weights, backbone.spec.card_path.parent, official.sha256)
    head = head_from_state_dict(state, backbone.heads, str(path))
    if head.linear.out_features != task.num_classes:
        raise UserError(
            f"head '{cell.layers}' of {cell.backbone} has {head.linear.out_features} classes, task '{task.name}' has {task.num_classes}"
        )
    [layer_set] = parse_layer_sets(cell.layers, backbone.depth, backbone.spec.windows)  # e.g. last=avg:18-23
    scores, extra = {}, {}
    for name, images in (("val", splits.val), ("test", splits.test)):
        advance = ctx.progress(f"released head {cell.layers} on {name}", len(images))
        predictions = head_predictions(backbone, [head], [layer_set], images, options.batch_size, options.workers, advance)
        labels = torch.as_tensor(images.labels, dtype=torch.int64)
        scores[name] = float(score_predictions(predictions, labels, task.metric, task.num_classes)[0])
        if name == "test":  # secondary metrics are reported for test only; selection never reads them
            extra = secondary_scores(predictions, labels, task.secondary_metrics, task.num_classes)[0]
    window = official.layers
    result = LayerResult(layer_set.name, window, "attentive", None, scores["val"], scores["test"], extra)
    config = {
        "kind": OFFICIAL, "head": cell.layers, "head_weights_id": info.id, "head_sha256": info.sha256,
        "window": list(window), "training": "none: the released head is evaluated as is", "selection": "none",
    }  # fmt: skip
    return ProbeResult(heads=[], layers=[result], best=result, last=result), config


def run_cell(cell: Cell, options: RunOptions, stage: StageCallback = _no_progress) -> Path:
    """Evaluate ``cell`` and return the path of its record; with ``options.progress_file`` its
    stages go to its progress file instead of ``stage``."""
    started = time.perf_counter()
    registry = Registry.load(options.card_dirs)
    task = registry.task(cell.task)
    config = cell.probe_config
    # a trained cell's val fraction was resolved with its config; released heads use the protocol card's
    val_fraction = config.val_fraction if config is not None else registry.protocol(cell.protocol).val_fraction.value
    splits = load_task(task, options.data_root, cell.limit, val_fraction)
    device = resolve_device(options.device)
    torch.manual_seed(cell.seed)
    backbone = load_backbone(cell.backbone, weights=cell.weights, registry=registry, dtype=cell.dtype).to(device)
    name = cell.record_name(registry)
    state_path = options.results_dir / STATE_DIR / f"{Path(name).stem}.pt"
    if options.progress_file:
        stage = ProgressFile(progress_path(options.results_dir, name))
    ctx = Context(cell, backbone, task, splits, options, stage, state_path)
    if cell.probe.startswith(f"{OFFICIAL}:"):
        result, probe_config = _probe_official(ctx)
    elif isinstance(cell.probe_config, AttentiveProbeConfig):
        result, probe_config = _probe_attentive(ctx)
    else:
        result, probe_config = _probe_pooled(ctx)

    spec = backbone.spec
    record = {
        **new_record_header(cell.key, cell.config_hash(registry)),
        "backbone": cell.backbone,
        "task": cell.task,
        "probe": cell.probe,
        "protocol": "" if config is None else cell.protocol_label,  # released heads follow no protocol
        "seed": cell.seed,
        "weights_key": cell.weights_key,
        "weights_name": cell.weights_name,
        "weights_id": backbone.weights.id,
        "weights_sha256": backbone.weights.sha256,
        "dtype": cell.dtype,
        "task_version": task.version,
        "dataset_source": splits.source,
        "dataset_revision": splits.revision,
        "split_policy": task.split_policy(val_fraction),
        **{f"n_{name}": size for name, size in splits.sizes().items()},
        "layers_spec": cell.layers,
        "image_limit": cell.limit,
        "metric": task.metric,
        "secondary_metrics": list(task.secondary_metrics),
        **{f"{which}_{key}": value for which in ("best", "last") for key, value in getattr(result, which).as_record().items()},
        "layers": [r.as_record() for r in result.layers],
        "heads": [dataclasses.asdict(h) for h in result.heads],
        "probe_config": probe_config if config is None else {**probe_config, "protocol": protocol_record(cell.protocol, config)},
        "backbone_info": {
            "family": spec.family,
            "adapter": spec.adapter,
            "arch": spec.arch,
            "depth": spec.depth,
            "windows": {name: list(blocks) for name, blocks in spec.windows.items()},  # what paper numbers were measured on
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
    path = record_path(options.results_dir, name)
    write_record_atomic(path, record)
    for state in state_path.parent.glob(f"{state_path.stem}.*"):  # resume states and the progress file
        drop_state(state)
    return path
