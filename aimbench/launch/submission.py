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
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import submitit

from aimbench.atomic import atomic_write
from aimbench.errors import UserError

JOBS_DIR = "jobs"
Submitted = TypeVar("Submitted")


def submit_quietly(home: Path, name: str, parameters: dict[str, Any], what: str,
                   launch: Callable[[submitit.AutoExecutor], Submitted]) -> tuple[str, Submitted]:  # fmt: skip
    """``launch`` a new submission under ``home``; returns its id and what ``launch`` returned."""
    submission_id = time.strftime("%Y%m%d-%H%M%S")
    folder = home / JOBS_DIR / submission_id
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm")
    executor.update_parameters(name=name, **parameters)
    echoed = io.StringIO()
    try:
        with contextlib.redirect_stderr(echoed), contextlib.redirect_stdout(echoed):
            return submission_id, launch(executor)
    except (subprocess.CalledProcessError, OSError, RuntimeError) as exc:
        shutil.rmtree(folder, ignore_errors=True)  # submitit made it for logs and pickles: nothing was submitted
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
