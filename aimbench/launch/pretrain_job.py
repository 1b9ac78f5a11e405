"""Pre-training on Slurm: one submitit job of N nodes x T tasks, one task per GPU, resumable on requeue.

Every task runs :class:`PretrainJob`; rank and world come from the Slurm environment
(``aimbench.pretrain.distributed.world_from_env``), so the same trainer runs as under torchrun.
The job is a submitit ``Checkpointable``: on preemption or the time-limit signal it is requeued,
and the restarted tasks continue from the run's ``checkpoint.pt`` (every ``--save-every`` steps),
never from anything pickled with the callable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import submitit

from aimbench.launch.slurm_settings import SlurmSettings
from aimbench.launch.submission import record_submission, submit_quietly
from aimbench.pretrain.checkpoint import RunFiles
from aimbench.pretrain.recipe import PretrainConfig


@dataclass
class PretrainJob(submitit.helpers.Checkpointable):
    """What each Slurm task runs: train, resuming whenever the run directory already holds a checkpoint."""

    config: PretrainConfig
    data: str
    out: Path
    device: str
    workers: int
    parallel: str
    activation_checkpointing: bool | None

    def __call__(self) -> str:
        from aimbench.pretrain.distributed import rank_device, world_from_env
        from aimbench.pretrain.parallel import choose
        from aimbench.pretrain.sources import parse_data
        from aimbench.pretrain.trainer import train

        world = world_from_env()
        plan = choose(self.config.preset, world, self.parallel, self.activation_checkpointing)
        resume = RunFiles.of(self.out).checkpoint.exists()  # a requeued job continues its own run
        train(self.config, parse_data(self.data), self.out, rank_device(self.device, world), world, resume=resume,
              workers=self.workers, plan=plan)  # fmt: skip
        return str(RunFiles.of(self.out).trunk)


def submit_pretrain(job: PretrainJob, settings: SlurmSettings, nodes: int, tasks_per_node: int) -> tuple[str, Path]:
    """Submit ``job`` on ``nodes`` x ``tasks_per_node`` tasks; returns the Slurm job id and the submission file."""
    job.out = job.out.expanduser().resolve()
    parameters = settings.executor_parameters(nodes=nodes, tasks_per_node=tasks_per_node)
    submission_id, [submitted] = submit_quietly(job.out, f"aimbench-pretrain-{job.config.preset}", "the pre-training job",
                                                [(parameters, lambda executor: [executor.submit(job)])])  # fmt: skip
    state = {"kind": "pretrain", "job_id": submitted.job_id, "out": str(job.out), "nodes": nodes, "tasks_per_node": tasks_per_node,
             "stdout": str(submitted.paths.stdout), "stderr": str(submitted.paths.stderr), "settings": parameters}  # fmt: skip
    return submitted.job_id, record_submission(job.out, submission_id, state)
