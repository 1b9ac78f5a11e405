"""Evaluate one planned cell end to end and write its record: the callable every launcher runs.

A short sequence: load the task's data (before the backbone, so missing data fails in a second,
not after loading a 7B), load the backbone, run the cell's probe kind (``aimbench.probes.run_probe``:
every layer set x grid point from one pass per split, selection on val), and let the store build
the record from the typed results and write it atomically, so an interrupted cell leaves nothing
behind and is simply run again on resume. What the cell is comes from the plan
(:class:`~aimbench.identity.CellIdentity`); nothing here recomputes it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from aimbench.adapters import load_backbone
from aimbench.cards.registry import Registry
from aimbench.data import load_task
from aimbench.distributed import barrier, init_process_group, rank_device, world_from_env
from aimbench.launch.cell_progress import STATE_DIR, PlainProgress, ProgressFile, progress_path
from aimbench.launch.options import RunOptions
from aimbench.probes import ProbeJob, StageCallback, check_world, no_progress, protocol_record, run_probe
from aimbench.provenance import environment
from aimbench.store.records import CellRun, DataUsed, record_path, write_cell_record

if TYPE_CHECKING:
    from aimbench.adapters.base import Backbone
    from aimbench.launch.base import PlannedCell


def run_cell(
    planned: PlannedCell, options: RunOptions, stage: StageCallback = no_progress, registry: Registry | None = None,
    loaded: Mapping[str, Backbone] | None = None,
) -> Path:  # fmt: skip
    """Evaluate ``planned`` and return the path of its record; ``registry``: the cards it was planned
    from (a job on another machine loads them from ``options.card_dirs``); ``loaded``: backbones
    already built in this process, by name (in-memory modules). With ``options.progress_file`` its
    stages go to its progress file instead of ``stage``."""
    started = time.perf_counter()
    cell, identity = planned.cell, planned.identity
    world = world_from_env()  # one process alone, or one rank of a cell run by several (aimbench.probes.ownership)
    check_world(cell.planned_sets, world.size)
    registry = registry or Registry.load(options.card_dirs)
    task = registry.task(cell.task)
    splits = load_task(task, options.data_root, cell.limit, cell.val_fraction)
    device = rank_device(options.device, world)
    init_process_group(world, device)
    torch.manual_seed(cell.seed)
    built = (loaded or {}).get(cell.backbone)
    backbone = (built or load_backbone(cell.backbone, weights=cell.weights, registry=registry, dtype=cell.dtype)).to(device)
    load_s = time.perf_counter() - started  # cards, the task's data and the backbone
    # each rank keeps its own heads' state; the name says the world, so a state never resumes under another division
    state_path = (
        options.results_dir
        / STATE_DIR
        / (f"{identity.stem}.pt" if world.size == 1 else f"{identity.stem}.rank{world.rank}of{world.size}.pt")
    )
    if not world.is_main:
        stage = no_progress  # the main rank speaks for the cell
    elif options.progress_file:
        stage = ProgressFile(progress_path(options.results_dir, identity.record_name), echo=PlainProgress())  # the file, and log lines
    job = ProbeJob(
        backbone=backbone, task=task, splits=splits, config=cell.probe_config, layers=cell.layers, layer_sets=cell.planned_sets,
        seed=cell.seed,
        cache_dir=options.cache_dir, batch_size=options.batch_size, workers=options.workers, memory_gb=options.memory_gb,
        checkpoint_every=options.checkpoint_every, checkpoint_seconds=options.checkpoint_seconds, state_path=state_path,
        stage=stage, label=f"{cell.backbone} · {cell.task}", rank=world.rank, world=world.size,
    )  # fmt: skip
    outcome = run_probe(cell.probe, job)
    config = cell.probe_config
    probe_config = outcome.config if config is None else {**outcome.config, "protocol": protocol_record(cell.protocol, config)}
    total_s = time.perf_counter() - started
    path = record_path(options.results_dir, identity.record_name)
    if not world.is_main:  # the main rank writes the one record and clears the cell's states
        barrier(world)
        return path
    parallel = {"world_size": world.size, "images_per_forward": options.batch_size}
    if config is not None and "batch_size" in outcome.config:
        parallel["global_batch"] = outcome.config["batch_size"]
    run = CellRun(
        identity=identity, backbone=backbone.spec, weights_id=backbone.weights.id, weights_sha256=backbone.weights.sha256,
        features=backbone.provenance.as_dict(), task=task,
        data=DataUsed(splits.source, splits.revision, task.split_policy(cell.val_fraction), splits.sizes()),
        result=outcome.result, probe_config=probe_config, environment={**environment(device), **parallel}, wall_time_s=total_s,
        timing=outcome.timing.as_record(load_s, total_s), test=splits.test,
    )  # fmt: skip
    write_cell_record(path, run)
    for state in state_path.parent.glob(f"{identity.stem}.*"):  # every rank's resume states, and the progress file
        state.unlink(missing_ok=True)
    barrier(world)
    return path
