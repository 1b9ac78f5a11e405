"""Cells on Slurm: job arrays through submitit, running the same ``run_cell`` as the local launcher.

Before anything is submitted, cells whose record already exists (same configuration hash) are
set aside, so re-running a sweep submits only what is missing (``rerun`` submits everything).
Each cell's resources come from the settings and its backbone card's memory hint
(``aimbench.launch.resources``); cells asking for the same go in one array, so a sweep of one
backbone is one array and a sweep over sizes is one array per size.
The callable is a submitit ``Checkpointable``: on preemption or the time-limit signal submitit
requeues the cell, and the cell resumes from the training state the probe engine keeps on disk
(``results/state/``), never from anything in the pickle. What was submitted is written to
``results/jobs/<submission>.json`` (job ids, cell keys, record names, log paths), so a new shell
can find it, and a running cell keeps its progress in ``results/state/`` (``aimbench.launch.cell_progress``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import submitit

from aimbench.cards.registry import Registry
from aimbench.launch.cells import Cell
from aimbench.launch.options import RunOptions
from aimbench.launch.resources import MemoryNeed, cell_parameters
from aimbench.launch.run_cell import run_cell
from aimbench.launch.slurm_settings import SlurmSettings
from aimbench.launch.submission import record_submission, submit_quietly
from aimbench.store.records import finished, record_path


class CellJob(submitit.helpers.Checkpointable):
    """The job-side callable: evaluate one cell (its progress in its progress file); returns its record's path (as text)."""

    def __init__(self, options: RunOptions) -> None:
        self.options = replace(options, progress_file=True)

    def __call__(self, cell: Cell) -> str:
        return str(run_cell(cell, self.options))


@dataclass(frozen=True)
class Array:
    """Cells that ask Slurm for the same resources, submitted as one job array."""

    parameters: dict[str, Any]
    cells: list[Cell]
    records: list[str]  # per cell: its record's file name
    needs: list[MemoryNeed]  # per cell: the memory need its resources were sized from


@dataclass(frozen=True)
class Plan:
    """What a submission would do: the arrays to submit and the cells skipped because their record exists."""

    arrays: list[Array]
    skipped: list[Cell]

    @property
    def to_run(self) -> list[Cell]:
        return [cell for array in self.arrays for cell in array.cells]


@dataclass(frozen=True)
class Submission:
    id: str
    state_file: Path
    jobs: list[Any]  # submitit.Job, one per cell in to_run order


def absolute_options(options: RunOptions) -> RunOptions:
    """Paths as the job will see them, whatever directory it starts in."""

    def resolve(path: Path | None) -> Path | None:
        return None if path is None else path.expanduser().resolve()

    return replace(
        options,
        results_dir=options.results_dir.expanduser().resolve(),
        data_root=resolve(options.data_root),
        cache_dir=resolve(options.cache_dir),
        card_dirs=tuple(p.expanduser().resolve() for p in options.card_dirs),
    )


def plan(cells: list[Cell], options: RunOptions, settings: SlurmSettings, rerun: bool = False) -> Plan:
    """Skip finished cells, size the others, and group them by equal resources (in first-seen order)."""
    registry = Registry.load(options.card_dirs)
    done, arrays = [], {}
    for cell in cells:
        record = cell.record_name(registry)
        if not rerun and finished(record_path(options.results_dir, record)):
            done.append(cell)
            continue
        parameters, need = cell_parameters(settings, registry.backbone(cell.backbone), cell.dtype)
        array = arrays.setdefault(repr(sorted(parameters.items())), Array(parameters, [], [], []))
        array.cells.append(cell)
        array.records.append(record)
        array.needs.append(need)
    return Plan(list(arrays.values()), done)


def submit(planned: Plan, options: RunOptions) -> Submission:
    """Submit each array of ``planned`` (all or none); fails at once, in one line, when Slurm cannot take them."""
    options = absolute_options(options)
    job = CellJob(options)
    groups = [(array.parameters, lambda executor, cells=array.cells: executor.map_array(job, cells)) for array in planned.arrays]
    submission_id, jobs = submit_quietly(options.results_dir, "aimbench-eval", "the job array", groups)
    placed = [(array, cell, record) for array in planned.arrays for cell, record in zip(array.cells, array.records)]  # jobs' order
    cells = [
        {"key": c.key, "record": record, "job_id": j.job_id, "stdout": str(j.paths.stdout), "stderr": str(j.paths.stderr),
         "resources": array.parameters}
        for (array, c, record), j in zip(placed, jobs)
    ]  # fmt: skip
    state_file = record_submission(options.results_dir, submission_id, {"kind": "eval", "cells": cells})
    return Submission(submission_id, state_file, jobs)
