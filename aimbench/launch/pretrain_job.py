"""Pre-training on Slurm: one submitit job of N nodes x T tasks, one task per GPU, resumable on requeue.

Every task runs :class:`PretrainJob`; rank and world come from the Slurm environment
(``aimbench.pretrain.distributed.world_from_env``), so the same trainer runs as under torchrun.
The job is a submitit ``Checkpointable``: on preemption or the time-limit signal it is requeued,
and the restarted tasks continue from the run's ``checkpoint.pt`` (every ``--save-every`` steps),
never from anything pickled with the callable.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import submitit

from aimbench.atomic import atomic_write
from aimbench.errors import UserError
from aimbench.launch.slurm import JOBS_DIR, sbatch_error
from aimbench.launch.slurm_settings import SlurmSettings
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
    out = job.out.expanduser().resolve()
    job.out = out
    submission_id = time.strftime("%Y%m%d-%H%M%S")
    folder = out / JOBS_DIR / submission_id
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm")
    executor.update_parameters(name=f"aimbench-pretrain-{job.config.preset}",
                               **settings.executor_parameters(nodes=nodes, tasks_per_node=tasks_per_node))  # fmt: skip
    echoed = io.StringIO()
    try:
        with contextlib.redirect_stderr(echoed), contextlib.redirect_stdout(echoed):
            submitted = executor.submit(job)
    except (subprocess.CalledProcessError, OSError, RuntimeError) as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise UserError(f"Slurm did not accept the pre-training job: {sbatch_error(exc)}") from None
    state = {"submission": submission_id, "kind": "pretrain", "job_id": submitted.job_id, "out": str(out),
             "nodes": nodes, "tasks_per_node": tasks_per_node, "stdout": str(submitted.paths.stdout),
             "stderr": str(submitted.paths.stderr), "settings": settings.executor_parameters(nodes=nodes, tasks_per_node=tasks_per_node)}  # fmt: skip
    state_file = out / JOBS_DIR / f"{submission_id}.json"
    text = json.dumps(state, indent=1) + "\n"
    atomic_write(state_file, lambda handle: handle.write(text.encode("utf-8")))
    return submitted.job_id, state_file
