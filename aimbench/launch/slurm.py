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

import contextlib
import io
import json
import shutil
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import submitit

from aimbench.atomic import atomic_write
from aimbench.cards.registry import Registry
from aimbench.errors import UserError
from aimbench.launch.cells import Cell
from aimbench.launch.run_cell import RunOptions, run_cell
from aimbench.launch.slurm_settings import SlurmSettings
from aimbench.store.records import record_path

JOBS_DIR = "jobs"


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
    submission_id = time.strftime("%Y%m%d-%H%M%S")
    folder = options.results_dir / JOBS_DIR / submission_id
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm")
    executor.update_parameters(name="aimbench-eval", **planned.settings.executor_parameters())
    echoed = io.StringIO()  # submitit echoes sbatch's stderr; the error below says it in one line
    try:
        with contextlib.redirect_stderr(echoed), contextlib.redirect_stdout(echoed):
            jobs = executor.map_array(CellJob(options), planned.to_run)
    except (subprocess.CalledProcessError, OSError, RuntimeError) as exc:  # sbatch missing, controller down, bad partition
        shutil.rmtree(folder, ignore_errors=True)  # submitit made it for logs and pickles: nothing was submitted
        with contextlib.suppress(OSError):
            folder.parent.rmdir()  # jobs/ itself, when this was the first submission
        raise UserError(f"Slurm did not accept the job array: {sbatch_error(exc)}") from None
    state = {
        "submission": submission_id,
        "kind": "eval",
        "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": planned.settings.executor_parameters(),
        "cells": [
            {"key": c.key, "record": c.record_name(registry), "job_id": j.job_id,
             "stdout": str(j.paths.stdout), "stderr": str(j.paths.stderr)}  # fmt: skip
            for c, j in zip(planned.to_run, jobs)
        ],
    }
    state_file = options.results_dir / JOBS_DIR / f"{submission_id}.json"
    text = json.dumps(state, indent=1) + "\n"
    atomic_write(state_file, lambda handle: handle.write(text.encode("utf-8")))
    return Submission(submission_id, state_file, jobs)


def sbatch_error(exc: BaseException) -> str:
    output = getattr(exc, "output", None) or getattr(exc, "stderr", None)
    if isinstance(output, bytes):
        output = output.decode("utf-8", "replace")
    text = (output or str(exc)).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
