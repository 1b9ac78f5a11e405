"""Evaluate one cell end to end and write its record: the callable every launcher runs.

A short sequence: load the task's data (before the backbone, so missing data fails in a second,
not after loading a 7B), load the backbone, run the cell's probe kind (``aimbench.probes.run_probe``:
every layer set x grid point from one pass per split, selection on val), and let the store build
the record from the typed results and write it atomically, so an interrupted cell leaves nothing
behind and is simply run again on resume.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from aimbench.adapters import load_backbone
from aimbench.cards.registry import Registry
from aimbench.data import load_task
from aimbench.launch.cell_progress import STATE_DIR, PlainProgress, ProgressFile, progress_path
from aimbench.launch.cells import Cell
from aimbench.launch.options import RunOptions
from aimbench.probes import ProbeJob, StageCallback, no_progress, protocol_record, run_probe
from aimbench.provenance import environment, resolve_device
from aimbench.store.records import CellIdentity, CellRun, DataUsed, build_record, record_path, write_record_atomic


def run_cell(cell: Cell, options: RunOptions, stage: StageCallback = no_progress) -> Path:
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
    load_s = time.perf_counter() - started  # cards, the task's data and the backbone
    name = cell.record_name(registry)
    state_path = options.results_dir / STATE_DIR / f"{Path(name).stem}.pt"
    if options.progress_file:
        stage = ProgressFile(progress_path(options.results_dir, name), echo=PlainProgress())  # the file, and lines in the job's log
    job = ProbeJob(
        backbone, task, splits, config, cell.layers, cell.seed, options.cache_dir, options.batch_size, options.workers,
        options.memory_gb, options.checkpoint_every, options.checkpoint_seconds, state_path, stage, f"{cell.backbone} · {cell.task}",
    )  # fmt: skip
    outcome = run_probe(cell.probe, job)
    identity = CellIdentity(
        cell.key, cell.config_hash(registry), cell.backbone, cell.task, cell.probe,
        "" if config is None else cell.protocol_label,  # released heads follow no protocol
        cell.seed, cell.weights_key, cell.weights_name, cell.dtype, cell.layers, cell.limit,
    )  # fmt: skip
    probe_config = outcome.config if config is None else {**outcome.config, "protocol": protocol_record(cell.protocol, config)}
    total_s = time.perf_counter() - started
    run = CellRun(
        identity, backbone.spec, backbone.weights.id, backbone.weights.sha256, backbone.provenance.as_dict(), task,
        DataUsed(splits.source, splits.revision, task.split_policy(val_fraction), splits.sizes()),
        outcome.result, probe_config, environment(device), total_s, outcome.timing.as_record(load_s, total_s),
    )  # fmt: skip
    path = record_path(options.results_dir, name)
    write_record_atomic(path, build_record(run))
    for state in state_path.parent.glob(f"{state_path.stem}.*"):  # resume states and the progress file
        state.unlink(missing_ok=True)
    return path
