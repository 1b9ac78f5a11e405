"""Pre-training on Slurm: one submitit job of N nodes x T tasks, one task per GPU, resumable on requeue.

Every task runs :class:`PretrainJob`, which calls the same ``run_pretrain`` as a local run; rank and
world come from the Slurm environment (``aimbench.distributed.world_from_env``). The job is
a submitit ``Checkpointable``: on preemption or the time-limit signal it is requeued, and the
restarted tasks continue from the run's ``checkpoint.pt`` (every ``--save-every`` steps), never
from anything pickled with the callable.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import submitit

from aimbench.launch.slurm.limits import check_limits
from aimbench.launch.slurm.settings import SlurmSettings
from aimbench.launch.slurm.submission import record_submission, submit_quietly
from aimbench.pretrain.request import PretrainRequest


@dataclass
class PretrainJob(submitit.helpers.Checkpointable):
    """What each Slurm task runs: train, resuming whenever the run directory already holds a checkpoint."""

    request: PretrainRequest

    def __call__(self) -> str:
        from aimbench.pretrain.checkpoint import RunFiles
        from aimbench.pretrain.run import run_pretrain

        files = RunFiles.of(self.request.out)
        run_pretrain(replace(self.request, resume=files.checkpoint.exists()))  # a requeued job continues its own run
        return str(files.trunk)


def submit_pretrain(request: PretrainRequest, settings: SlurmSettings, nodes: int, tasks_per_node: int) -> tuple[str, Path]:
    """Submit ``request`` on ``nodes`` x ``tasks_per_node`` tasks; returns the Slurm job id and the submission file."""
    from aimbench.pretrain.checkpoint import RunFiles

    request = replace(request, out=request.out.expanduser().resolve())
    RunFiles.of(request.out).require_new_or_resumed(request.resume)  # before the queue, not when the job starts
    job = PretrainJob(request)
    parameters = settings.executor_parameters(nodes=nodes, tasks_per_node=tasks_per_node)
    check_limits(settings, [parameters])  # a job Slurm would hold forever is refused before the queue
    submission_id, [submitted] = submit_quietly(request.out, f"aimbench-pretrain-{request.preset}", "the pre-training job",
                                                [(parameters, lambda executor: [executor.submit(job)])])  # fmt: skip
    state = {"kind": "pretrain", "job_id": submitted.job_id, "out": str(request.out), "nodes": nodes, "tasks_per_node": tasks_per_node,
             "stdout": str(submitted.paths.stdout), "stderr": str(submitted.paths.stderr), "settings": parameters}  # fmt: skip
    return submitted.job_id, record_submission(request.out, submission_id, state)
