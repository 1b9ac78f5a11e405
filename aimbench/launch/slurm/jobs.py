"""What became of submitted cells: Slurm's state of each job, how far it is, its logs, and the error of a failed one.

The submissions are the ``results/jobs/*.json`` files the Slurm launcher writes, so any shell
on the cluster sees the same list. States come from ``squeue`` while a job is queued or running
(the controller's live view; accounting lags it) and from ``sacct`` once it has left the queue
(accounting keeps finished jobs). Progress
comes from files the jobs write: an eval cell's progress file (``aimbench.launch.cell_progress``),
a pre-training run's ``metrics.jsonl``.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from aimbench.errors import UserError
from aimbench.launch.base import JobRow
from aimbench.launch.cell_progress import progress_path, read_progress
from aimbench.launch.slurm.submission import JOBS_DIR
from aimbench.store.records import record_path

_CELL_FIELDS = ("key", "record", "job_id", "stdout", "stderr")
_PRETRAIN_FIELDS = ("out", "job_id", "stdout", "stderr")


def submissions(results: Path) -> list[dict]:
    """Every submission file, read and checked for the shape the launcher writes: a damaged or
    foreign one is one error naming it, never a KeyError deep in the listing."""
    folder = results / JOBS_DIR
    found = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            submission = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UserError(f"submission file {path} cannot be read ({exc}); delete it if it is not needed") from None
        if not _well_formed(submission):
            raise UserError(f"submission file {path} is not one aimbench wrote (fields missing or of the wrong type); "
                            "delete it if it is not needed")  # fmt: skip
        found.append(submission)
    return found


def _has_strings(item: object, fields: tuple[str, ...]) -> bool:
    return isinstance(item, dict) and all(isinstance(item.get(field), str) for field in fields)


def _well_formed(submission: object) -> bool:
    """An object naming its submission, with either a pre-training run's fields or a list of cells."""
    if not isinstance(submission, dict) or not _has_strings(submission, ("submission",)):
        return False
    if submission.get("kind") == "pretrain":
        return _has_strings(submission, _PRETRAIN_FIELDS)
    cells = submission.get("cells")
    return isinstance(cells, list) and all(_has_strings(cell, _CELL_FIELDS) for cell in cells)


def run_slurm(command: list[str], timeout_s: float = 60) -> str | None:
    """A Slurm command's output, or None when it is missing, fails or does not answer in ``timeout_s``."""
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def as_sacct_elapsed(text: str) -> str:
    """squeue's compact ``M:SS`` / ``H:MM:SS`` / ``D-HH:MM:SS`` as sacct writes it (``HH:MM:SS``, ``D-HH:MM:SS``)."""
    match = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)", text.strip())
    if match is None:
        return text
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return f"{days}-" * bool(days) + f"{hours:02d}:{minutes:02d}:{seconds:02d}"


def slurm_states(job_ids: list[str]) -> dict[str, tuple[str, str, str]]:
    """job id (``123_4`` for array tasks) -> (state, elapsed, why it is pending): squeue for jobs
    still queued or running, sacct for the rest."""
    if not job_ids:
        return {}
    arrays = sorted({job_id.split("_")[0] for job_id in job_ids})
    states: dict[str, tuple[str, str, str]] = {}
    accounting = run_slurm(["sacct", "-X", "-n", "-P", "-o", "JobID,State,Elapsed", "-j", ",".join(arrays)])
    for line in (accounting or "").splitlines():
        job_id, state, elapsed = (line.split("|") + ["", "", ""])[:3]
        states[job_id] = (state.split()[0] if state else "UNKNOWN", elapsed, "")  # "CANCELLED by 0" -> CANCELLED
    queue = run_slurm(["squeue", "-h", "-r", "-o", "%i|%T|%M|%r", "-j", ",".join(arrays)])
    for line in (queue or "").splitlines():  # the controller's live state wins: accounting lags it by seconds
        job_id, state, elapsed, reason = (line.split("|") + ["", "", "", ""])[:4]
        states[job_id] = (state, as_sacct_elapsed(elapsed), reason if state == "PENDING" and reason not in ("", "None") else "")
    return states


def _cells(submission: dict) -> list[dict]:
    """An eval submission's cells; a pre-training submission is one row whose 'record' is the exported trunk."""
    if submission.get("kind") == "pretrain":
        trunk = str(Path(submission["out"]) / "trunk.safetensors")
        return [{"key": f"pretrain -> {submission['out']}", "record": trunk, **{k: submission[k] for k in ("job_id", "stdout", "stderr")}}]
    return submission["cells"]


def pretrain_progress(run: Path) -> str:
    """``"step 1200/5000 loss 0.4123"`` from the run's last complete metrics line (read from the file's end)."""
    try:
        steps = json.loads((run / "config.json").read_text(encoding="utf-8"))["steps"]
        with (run / "metrics.jsonl").open("rb") as handle:
            handle.seek(max(0, handle.seek(0, 2) - 4096))
            complete = handle.read().decode("utf-8", "replace").split("\n")[:-1]  # the job may be mid-way through a line
        last = json.loads(complete[-1])
        return f"step {last['step'] + 1}/{steps} loss {last['loss']:.4f}"
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return ""


def _progress(results: Path, submission: dict, cell: dict, state: str, record: bool, waiting: str) -> str:
    if record or state == "PENDING":
        return f"waiting: {waiting}" if waiting else ""  # e.g. Resources, Priority, or PartitionConfig: it never fits
    if submission.get("kind") == "pretrain":
        return pretrain_progress(Path(submission["out"]))
    return read_progress(progress_path(results, cell["record"]))


def job_rows(results: Path) -> list[JobRow]:
    submitted = submissions(results)
    states = slurm_states([cell["job_id"] for s in submitted for cell in _cells(s)])
    rows = []
    for submission in submitted:
        for cell in _cells(submission):
            state, elapsed, waiting = states.get(cell["job_id"], ("UNKNOWN", "", ""))
            record = record_path(results, cell["record"]).exists()
            rows.append(JobRow(submission=submission["submission"], cell=cell["key"], job_id=cell["job_id"], state=state, elapsed=elapsed,
                               record=record, stdout=Path(cell["stdout"]), stderr=Path(cell["stderr"]),
                               progress=_progress(results, submission, cell, state, record, waiting)))  # fmt: skip
    return rows


EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b.*")


def error_tail(row: JobRow, lines: int = 3) -> str:
    """What a failed cell died of: the last exception line of its stderr, else its last lines. A cell
    on several tasks logs one stderr per rank: where rank 0's names no exception (it was ended
    because another rank failed), the first rank whose log does speaks, with its rank."""
    try:
        text = row.stderr.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"(no log at {row.stderr})"
    kept = [line.rstrip() for line in text.splitlines() if line.strip() and not line.startswith("submitit ")]
    exceptions = [line for line in kept if EXCEPTION_LINE.match(line)]
    if exceptions:
        return exceptions[-1]
    for rank, log in _other_ranks_logs(row.stderr):
        other = log.read_text(encoding="utf-8", errors="replace").splitlines()
        raised = [line.rstrip() for line in other if EXCEPTION_LINE.match(line)]
        if raised:
            return f"rank {rank}: {raised[-1]}"
    return "\n".join(kept[-lines:])


def _other_ranks_logs(stderr: Path) -> list[tuple[int, Path]]:
    """The stderr of a multi-task job's other tasks, beside rank 0's (submitit names them ``<job>_<task>_log.err``)."""
    prefix, marker, _ = stderr.name.rpartition("_0_log.err")
    if not marker:
        return []
    found = []
    for log in stderr.parent.glob(f"{prefix}_*_log.err"):
        task = log.name[len(prefix) + 1 : -len("_log.err")]
        if task.isdigit() and int(task) > 0:
            found.append((int(task), log))
    return sorted(found)


def cancel(results: Path, which: str) -> list[str]:
    """``scancel`` the unfinished jobs of ``which`` (a job id, an array id or ``all``); returns what was cancelled."""
    rows = [row for row in job_rows(results) if not row.finished]
    chosen = rows if which == "all" else [row for row in rows if which in (row.job_id, row.job_id.split("_")[0])]
    if which != "all" and not chosen:
        raise UserError(f"no unfinished job '{which}' among the submissions in {results / JOBS_DIR}")
    ids = [row.job_id for row in chosen]
    if ids and run_slurm(["scancel", *ids]) is None:
        raise UserError(f"scancel {' '.join(ids)} failed; is the Slurm controller reachable?")
    return ids
