"""The Slurm launcher: eval cells as job arrays and pre-training as one multi-node job, through submitit.

A cell on several ranks is one job (array task) of ``nodes`` x ``tasks_per_node`` tasks; submitit
runs :class:`CellJob` in every task, each a rank whose world comes from Slurm's environment, and
rank 0 writes the record. On preemption submitit checkpoints and requeues from rank 0 only; the
other ranks wait to be ended by that requeue (:func:`await_requeue`), and every task of the
requeued job resumes from the state on disk.

Planning is the shared one (``Launcher.plan``): cells whose record already exists are set aside,
so re-running a sweep submits only what is missing. Each cell's resources come from the settings
and its backbone card's memory hint (``resources``); cells asking for the same go in one array, so a
sweep of one backbone is one array and a sweep over sizes is one array per size. The job callables
are submitit ``Checkpointable``s: on preemption or the time-limit signal submitit requeues them, and
they resume from state on disk (``results/state/``, a run's ``checkpoint.pt``), never from anything
in the pickle. What was submitted is written to ``<home>/jobs/<submission>.json`` (job ids, cell
keys, record names, log paths), so a new shell can find it; a running cell keeps its progress in
``results/state/`` (``aimbench.launch.cell_progress``).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import submitit

from aimbench.cards.registry import Registry
from aimbench.errors import UserError
from aimbench.launch.base import EvalPlan, JobRow, Launched, Launcher, PlannedCell
from aimbench.launch.cells import Cell
from aimbench.launch.memory import MemoryNeed, cell_memory
from aimbench.launch.options import RunOptions
from aimbench.launch.preflight import preflight_pretrain
from aimbench.launch.slurm import jobs
from aimbench.launch.slurm.limits import check_limits
from aimbench.launch.slurm.pretrain_job import submit_pretrain
from aimbench.launch.slurm.resources import cell_parameters
from aimbench.launch.slurm.settings import SlurmSettings
from aimbench.launch.slurm.submission import record_submission, submit_quietly
from aimbench.launch.world import slurm_ranks
from aimbench.pretrain.request import PretrainRequest

REQUEUE_WAIT_S = 60.0


class CellJob(submitit.helpers.Checkpointable):
    """The job-side callable: evaluate one cell (its progress in its progress file); returns its record's path (as text)."""

    def __init__(self, options: RunOptions) -> None:
        self.options = replace(options, progress_file=True)

    def __call__(self, planned: PlannedCell) -> str:
        """Pre-emption (submitit's USR2) or SIGTERM while heads train stops them at the end of the
        step with their state saved; then submitit's own handler for that signal runs (checkpoint
        and requeue for USR2), and the requeued job resumes from that state."""
        from aimbench.launch.run_cell import run_cell  # on the compute node
        from aimbench.probes import Interrupted

        try:
            return str(run_cell(planned, self.options))
        except Interrupted as stopped:
            stopped.forward()  # USR2: requeues and exits; SIGTERM: submitit only logs it, and the job ends here
            if submitit.JobEnvironment().global_rank != 0:
                await_requeue()
            raise


def await_requeue(wait_s: float = REQUEUE_WAIT_S) -> None:
    """On a rank other than 0 of a stopped multi-rank cell: wait for rank 0's requeue to end this task.

    submitit requeues from global rank 0 only; were this task to end first with an error, Slurm
    (``--kill-on-bad-exit``) could end the job before rank 0 has requeued it, and the cell would
    be lost instead of resumed. Where no requeue comes (a plain SIGTERM), Slurm kills the task at
    the end of its grace period anyway; ``wait_s`` bounds it otherwise."""
    time.sleep(wait_s)


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


def arrays(plan: EvalPlan) -> list[tuple[dict[str, Any], list[Any]]]:
    """The cells to run grouped by equal resources, in first-seen order: one job array each."""
    grouped: dict[str, tuple[dict[str, Any], list[Any]]] = {}
    for planned in plan.to_run:
        grouped.setdefault(repr(sorted(planned.resources.items())), (planned.resources, []))[1].append(planned)
    return list(grouped.values())


class SlurmLauncher(Launcher):
    name: ClassVar[str] = "slurm"
    local: ClassVar[bool] = False

    def __init__(self, settings: SlurmSettings, nodes: int = 1, tasks_per_node: int | None = None) -> None:
        self.settings, self.nodes = settings, nodes
        self.tasks_per_node = tasks_per_node or max(1, settings.gpus)  # one task per GPU

    @property
    def ranks(self) -> int:
        """Ranks per cell: one task each, on every node."""
        return self.nodes * self.tasks_per_node

    def cell_world(self, gpus: int | None, device: str) -> tuple[int, int]:
        return slurm_ranks(gpus, self.ranks), self.nodes

    def resources(self, cell: Cell, registry: Registry) -> tuple[dict[str, Any], MemoryNeed | None]:
        need = cell_memory(cell, registry, gpu=self.settings.gpus > 0, world=self.ranks)  # one rank's need
        return cell_parameters(self.settings, need, cell.backbone, self.nodes, self.tasks_per_node), need

    def submit(self, plan: EvalPlan) -> Launched:
        """Submit each array of ``plan`` (all or none); fails at once, in one line, when Slurm cannot take them."""
        if plan.request.modules:
            raise UserError("an in-memory model runs in this process only (aimbench.evaluate); give Slurm a backbone card")
        options = absolute_options(plan.request.options)
        job = CellJob(options)
        groups = arrays(plan)
        check_limits(self.settings, [parameters for parameters, _ in groups])  # a job Slurm would hold forever is refused here
        launches = [(parameters, lambda executor, cells=planned: executor.map_array(job, cells)) for parameters, planned in groups]
        submission_id, submitted = submit_quietly(options.results_dir, "aimbench-eval", "the job array", launches)
        placed = [planned for _, members in groups for planned in members]  # the jobs' order
        cells = [
            {"key": p.identity.key, "record": p.record, "job_id": j.job_id, "stdout": str(j.paths.stdout), "stderr": str(j.paths.stderr),
             "resources": p.resources}
            for p, j in zip(placed, submitted)
        ]  # fmt: skip
        world = {"nodes": self.nodes, "tasks_per_node": self.tasks_per_node, "ranks": self.ranks}  # per cell
        state_file = record_submission(options.results_dir, submission_id, {"kind": "eval", "world": world, "cells": cells})
        return Launched(job_ids=[j.job_id for j in submitted], state_file=state_file)

    def pretrain(self, request: PretrainRequest) -> Launched:
        """One job of ``nodes`` x ``tasks_per_node`` tasks; a requeued job resumes its own checkpoint."""
        preflight_pretrain(request, local=False)
        job_id, state_file = submit_pretrain(request, self.settings, self.nodes, self.tasks_per_node)
        return Launched(job_ids=[job_id], state_file=state_file)

    def status(self, results: Path) -> list[JobRow]:
        return jobs.job_rows(results)

    def cancel(self, results: Path, which: str) -> list[str]:
        return jobs.cancel(results, which)
