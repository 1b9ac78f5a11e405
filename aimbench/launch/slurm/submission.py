"""One Slurm submission, eval array or pre-training job alike: where it lives, how it goes in, what is kept.

A submission gets ``HOME/jobs/<timestamp>/`` for submitit's pickles and logs, and, once Slurm has
accepted it, ``HOME/jobs/<timestamp>.json`` saying what was submitted (``aimbench jobs`` reads
these). sbatch's own stderr, which submitit echoes, is swallowed: a refusal (sbatch missing,
controller unreachable, unknown partition) becomes one ``UserError`` line and leaves no folder.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import submitit

from aimbench.atomic import atomic_write
from aimbench.errors import UserError

JOBS_DIR = "jobs"
Launch = Callable[[submitit.AutoExecutor], list[submitit.Job]]


def submit_quietly(home: Path, name: str, what: str, groups: Sequence[tuple[dict[str, Any], Launch]]) -> tuple[str, list[submitit.Job]]:
    """A new submission under ``home``: each group's ``launch`` runs on an executor with that group's
    parameters. Returns the submission id and every job, in group order. All or nothing: when Slurm
    refuses a later group, the jobs of the earlier ones are cancelled."""
    submission_id = time.strftime("%Y%m%d-%H%M%S")
    folder = home / JOBS_DIR / submission_id
    submitted: list[submitit.Job] = []
    echoed = io.StringIO()
    try:
        with contextlib.redirect_stderr(echoed), contextlib.redirect_stdout(echoed):
            for parameters, launch in groups:
                executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm")
                executor.update_parameters(name=name, **parameters)
                submitted.extend(launch(executor))
        return submission_id, submitted
    except (subprocess.CalledProcessError, OSError, RuntimeError) as exc:
        if submitted:
            with contextlib.suppress(OSError):
                subprocess.run(["scancel", *{job.job_id.split("_")[0] for job in submitted}], capture_output=True, check=False)
        shutil.rmtree(folder, ignore_errors=True)  # submitit made it for logs and pickles: nothing runs
        with contextlib.suppress(OSError):
            folder.parent.rmdir()  # jobs/ itself, when this was the first submission
        raise UserError(f"Slurm did not accept {what}: {sbatch_error(exc)}") from None


def record_submission(home: Path, submission_id: str, state: dict[str, Any]) -> Path:
    """Write ``HOME/jobs/<id>.json`` atomically; returns its path."""
    path = home / JOBS_DIR / f"{submission_id}.json"
    text = json.dumps({"submission": submission_id, "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **state}, indent=1) + "\n"
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))
    return path


def sbatch_error(exc: BaseException) -> str:
    """The line of a failed submission that says why (sbatch's last stderr line)."""
    output = getattr(exc, "output", None) or getattr(exc, "stderr", None)
    if isinstance(output, bytes):
        output = output.decode("utf-8", "replace")
    text = (output or str(exc)).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
