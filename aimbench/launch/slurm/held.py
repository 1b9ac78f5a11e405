"""Which pending reasons mean a Slurm job will never start by itself, so that ``aimbench jobs --watch`` stops instead of waiting.

Slurm keeps a job it cannot run pending, with a reason (``squeue %r``), rather than refusing it.
Some reasons clear as other jobs end or time passes; others only when someone changes the job or
the cluster. Watching the second kind forever is what made ``--watch`` look hung, so they stop it.

Permanent (the job alone can never be satisfied; the watch stops, exit code 3):

* ``PartitionConfig``: more CPUs, memory, GPUs or nodes than the partition has or allows;
* ``BadConstraints``: no node has the ``--constraint`` features;
* ``PartitionNodeLimit``: more nodes than the partition allows (or its nodes are down/drained);
* ``PartitionTimeLimit``: ``--time`` beyond the partition's ``MaxTime``;
* ``ReqNodeNotAvail`` and ``NodeDown`` when every node named (``UnavailableNodes:``) is down,
  drained, draining or failed (``sinfo``): an administrator must bring them back;
* per-job and per-node QOS/association maxima (``QOSMaxCpuPerJobLimit``,
  ``AssocMaxWallDurationPerJobLimit``, ``QOSMaxGRESPerNode``, ...) and minima (``QOSMin*``): they
  compare the job with a fixed limit, so nothing else finishing changes them;
* per-user resource maxima (``QOSMaxCpuPerUserLimit``, ``QOSMaxGRESPerUser``, ...) when none of
  the user's jobs is running: then the job alone exceeds the maximum (with jobs running, they
  may free the quota, so the reason is transient);
* ``DependencyNeverSatisfied``, ``InvalidAccount``, ``InvalidQOS``.

Transient (the watch goes on and prints the reason): ``Resources``, ``Priority``, ``Dependency``,
``BeginTime``, ``ReqNodeNotAvail`` / ``NodeDown`` with nodes merely busy or reserved,
job-count limits (``AssocMaxJobsLimit``, ``QOSMaxJobsPerUserLimit``, ``*MaxSubmit*``: they count
running jobs, which end), group and per-account limits (``AssocGrp*``, ``QOSGrp*``,
``*PerAccount``: shared with other users' jobs), ``JobHeldUser`` / ``JobHeldAdmin`` (a person
held it and a person releases it), ``PartitionDown`` / ``PartitionInactive`` (maintenance ends),
and any reason not named here.
"""

from __future__ import annotations

import getpass
import re

from aimbench.launch.base import JobRow
from aimbench.launch.slurm.jobs import run_slurm

WAITING = "waiting: "  # how jobs.job_rows writes a pending job's reason in its progress

FIXED = {
    "PartitionConfig": "it asks for more CPUs, memory, GPUs or nodes than its partition has or allows",
    "BadConstraints": "no node has the features its --constraint names",
    "PartitionNodeLimit": "it asks for more nodes than its partition allows, or the partition's nodes are down",
    "PartitionTimeLimit": "its --time exceeds its partition's MaxTime",
    "DependencyNeverSatisfied": "a job it depends on failed",
    "InvalidAccount": "its --account is not valid",
    "InvalidQOS": "its --qos is not valid",
}
PER_JOB = re.compile(r"^(QOS|Assoc)(Max\w*Per(Job|Node)\w*|MaxWallDuration\w*|Min\w+)$")
JOB_COUNTS = re.compile(r"(Jobs|Submit)")
PER_USER = re.compile(r"^(QOS|Assoc)Max\w*PerUser\w*$")
DOWN = ("down", "drain", "fail", "inval", "maint")  # sinfo %T: down*, drained, draining, fail, failing, inval


def pending_reason(row: JobRow) -> str:
    """A pending row's Slurm reason (``ReqNodeNotAvail, UnavailableNodes:vm``), else ''."""
    return row.progress[len(WAITING) :] if row.state == "PENDING" and row.progress.startswith(WAITING) else ""


def _nodes_down(nodes: str) -> bool:
    listed = run_slurm(["sinfo", "--noheader", "--Node", "--nodes", nodes, "--format", "%N|%T"])
    states = [line.split("|")[-1].strip().lower() for line in (listed or "").splitlines() if line.strip()]
    return bool(states) and all(state.startswith(DOWN) for state in states)


def _user_has_running_jobs() -> bool:
    running = run_slurm(["squeue", "--noheader", "--user", getpass.getuser(), "--states", "RUNNING,COMPLETING", "--format", "%i"])
    return running is None or bool(running.strip())  # unknown counts as running: never stop on a guess


def permanent(reason: str) -> str | None:
    """Why a job pending for ``reason`` will never start by itself, or None when the reason can clear."""
    code, _, detail = reason.partition(",")
    code = code.strip()
    if code in FIXED:
        return FIXED[code]
    if code in ("ReqNodeNotAvail", "NodeDown"):
        nodes = detail.partition("UnavailableNodes:")[2].strip()
        return f"the nodes it needs ({nodes}) are down or drained" if nodes and _nodes_down(nodes) else None
    if JOB_COUNTS.search(code):
        return None
    if PER_JOB.match(code):
        return "it exceeds a per-job limit of its QOS or account"
    if PER_USER.match(code) and not _user_has_running_jobs():
        return "it alone exceeds a per-user limit of its QOS or account"
    return None


def held_line(row: JobRow, why: str) -> str:
    """The one line that ends the watch."""
    reason = pending_reason(row).partition(",")[0]
    return (f"job {row.job_id} ({row.cell}) will never start: Slurm holds it for {reason} ({why}); "
            f"cancel it with: aimbench jobs --cancel {row.job_id.split('_')[0]}, and resubmit what fits")  # fmt: skip
