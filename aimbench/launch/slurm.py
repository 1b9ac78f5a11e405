"""Cells on Slurm: one job array through submitit, running the same ``run_cell`` as the local launcher.

Before anything is submitted, cells whose record already exists (same configuration hash) are
set aside, so re-running a sweep submits only what is missing (``rerun`` submits everything).
The callable is a submitit ``Checkpointable``: on preemption or the time-limit signal submitit
requeues the cell, and the cell resumes from the training state the probe engine keeps on disk
(``results/state/``), never from anything in the pickle. What was submitted is written to
``results/jobs/<submission>.json`` (job ids, cell keys, record names, log paths), so a new shell
can find it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import submitit

from aimbench.cards.registry import Registry
from aimbench.launch.cells import Cell
from aimbench.launch.run_cell import RunOptions, run_cell
from aimbench.launch.slurm_settings import SlurmSettings
from aimbench.launch.submission import record_submission, submit_quietly
from aimbench.store.records import record_path


class CellJob(submitit.helpers.Checkpointable):
    """The job-side callable: evaluate one cell and return its record's path (as text)."""

    def __init__(self, options: RunOptions) -> None:
        self.options = options

    def __call__(self, cell: Cell) -> str:
        return str(run_cell(cell, self.options))


@dataclass(frozen=True)
class Plan:
    """What a submission would do: the cells to run and those skipped because their record exists."""

    to_run: list[Cell]
    skipped: list[Cell]
    settings: SlurmSettings


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
    registry = Registry.load(options.card_dirs)
    done = [c for c in cells if not rerun and record_path(options.results_dir, c.record_name(registry)).exists()]
    return Plan([c for c in cells if c not in done], done, settings)


def submit(planned: Plan, options: RunOptions) -> Submission:
    """Submit ``planned.to_run`` as one job array; fails at once, in one line, when Slurm cannot take it."""
    options = absolute_options(options)
    registry = Registry.load(options.card_dirs)
    parameters = planned.settings.executor_parameters()
    submission_id, jobs = submit_quietly(options.results_dir, "aimbench-eval", parameters, "the job array",
                                         lambda executor: executor.map_array(CellJob(options), planned.to_run))  # fmt: skip
    cells = [
        {"key": c.key, "record": c.record_name(registry), "job_id": j.job_id, "stdout": str(j.paths.stdout), "stderr": str(j.paths.stderr)}
        for c, j in zip(planned.to_run, jobs)
    ]
    state_file = record_submission(options.results_dir, submission_id, {"kind": "eval", "settings": parameters, "cells": cells})
    return Submission(submission_id, state_file, jobs)
