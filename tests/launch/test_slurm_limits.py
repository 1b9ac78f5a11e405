"""A submission Slurm could never run is refused before it goes in, and ``jobs --watch`` never goes silent or waits on a held job.

Slurm here is fake: small ``sinfo`` / ``scontrol`` / ``squeue`` / ``sacct`` / ``sbatch`` scripts
written into ``tmp_path`` and put first on PATH, so these run anywhere in seconds. The real
cluster's version of the first case is in ``test_a_request_beyond_the_node_is_refused_and_one_that_fits_runs``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli

from aimbench.errors import UserError
from aimbench.launch.slurm.held import permanent
from aimbench.launch.slurm.limits import check_limits, matches, slurm_minutes
from aimbench.launch.slurm.settings import SlurmSettings

PARTITIONS = """\
PartitionName=debug AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL Default=YES MaxNodes=UNLIMITED MaxTime=08:00:00 MaxCPUsPerNode=UNLIMITED Nodes=cpu1 State=UP TotalCPUs=2 TotalNodes=1 MaxMemPerNode=UNLIMITED
PartitionName=gpu AllowGroups=ALL AllowAccounts=vision,nlp AllowQos=ALL Default=NO MaxNodes=2 MaxTime=2-00:00:00 MaxCPUsPerNode=UNLIMITED Nodes=g[1-2] State=UP TotalCPUs=32 TotalNodes=2 MaxMemPerNode=UNLIMITED
"""
NODES = """\
debug|cpu1|2|16000|(null)|(null)
gpu|g1|16|128000|gpu:a100:1(S:0)|a100,ib
gpu|g2|16|128000|gpu:a100:1(S:0)|a100,ib
"""


def _script(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder first on PATH with a two-partition cluster's scontrol and sinfo, and an sbatch that only notes it was called."""
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "partitions").write_text(PARTITIONS)
    (folder / "nodes").write_text(NODES)
    (folder / "node-states").write_text("g1|down*\ng2|drained\n")
    _script(folder, "scontrol", f'cat "{folder}/partitions"\n')
    _script(folder, "sinfo", f'case "$*" in *"%N|%T"*) cat "{folder}/node-states";; *) cat "{folder}/nodes";; esac\n')
    _script(folder, "sbatch", f'touch "{folder}/sbatch-called"\necho "sbatch: error: fake" >&2\nexit 1\n')
    _script(folder, "sacct", "exit 0\n")
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return folder


def _check(**settings: Any) -> None:
    nodes, tasks = settings.pop("nodes", 1), settings.pop("tasks_per_node", 1)
    chosen = SlurmSettings(**settings)
    check_limits(chosen, [chosen.executor_parameters(nodes=nodes, tasks_per_node=tasks)])


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"cpus_per_task": 4}, "--cpus-per-task 4 exceeds the 2 CPUs of every node in partition 'debug'; use --cpus-per-task 2 or less"),
        ({"cpus_per_task": 1, "mem_gb": 64.0}, "--mem-gb 64 exceeds the 15.6 GB of every node in partition 'debug'; use --mem-gb 15.6 or less"),
        ({"cpus_per_task": 1, "gpus_per_node": 1}, "--gpus-per-node 1: no node of partition 'debug' has a GPU; use --gpus-per-node 0"),
        ({"partition": "gpu", "account": "vision", "gpus_per_node": 2},
         "--gpus-per-node 2 exceeds the 1 GPU of every node in partition 'gpu'; use --gpus-per-node 1 or less"),
        ({"cpus_per_task": 1, "time": 600}, "--time 600 (minutes) exceeds the time limit of partition 'debug' (MaxTime 08:00:00); use --time 480 or less"),
        ({"partition": "big"}, "--partition 'big' does not exist; Slurm has: debug, gpu"),
        ({"partition": "gpu", "account": "vision", "constraint": "h100"},
         "--constraint 'h100' matches no node of partition 'gpu' (their features: a100, ib); use another --constraint or --partition"),
        ({"partition": "gpu", "account": "physics"}, "--account physics may not use partition 'gpu' (AllowAccounts=nlp,vision)"),
        ({"partition": "gpu", "account": "vision", "nodes": 3}, "--nodes 3 exceeds the 2 node(s) partition 'gpu' allows; use --nodes 2 or less"),
        ({"partition": "gpu", "account": "vision", "cpus_per_task": 8, "tasks_per_node": 4},
         "--cpus-per-task 8 x 4 tasks per node exceeds the 16 CPUs of every node in partition 'gpu'; use --cpus-per-task 4 or less"),
    ],
)  # fmt: skip
def test_a_request_beyond_the_partition_is_one_error_naming_the_option(fake_slurm: Path, settings: dict, message: str) -> None:
    with pytest.raises(UserError) as raised:
        _check(**settings)
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def test_requests_that_fit_pass_and_unreadable_limits_check_nothing(fake_slurm: Path) -> None:
    _check(cpus_per_task=2, mem_gb=15.0, time=480)
    _check(partition="gpu", account="vision", gpus_per_node=1, constraint="a100&ib", nodes=2, tasks_per_node=1, time=1440)
    _script(fake_slurm, "scontrol", 'echo "slurm_load_partitions: Unable to contact slurm controller" >&2\nexit 1\n')
    _check(cpus_per_task=64)  # the submission then fails as before, in sbatch's own words


def test_slurm_time_and_constraint_forms() -> None:
    assert [slurm_minutes(t) for t in ("UNLIMITED", "30", "30:30", "01:00:00", "2-00:00:00", "1-12")] == [None, 30, 31, 60, 2880, 2160]
    features = frozenset({"a100", "ib"})
    assert matches("a100", features) and matches("v100|a100", features) and matches("[a100&ib]", features)
    assert not matches("a100&nvlink", features) and not matches("h100", features)


def test_eval_is_refused_in_one_line_before_sbatch(fake_slurm: Path, tmp_path: Path, tiny_cards: Path) -> None:
    results = tmp_path / "results"
    proc = run_cli("eval", "-b", "micro-cls", "-t", "digits", "--cluster", "slurm", "--cards", str(tiny_cards), "--results", str(results))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == "error: --cpus-per-task 4 exceeds the 2 CPUs of every node in partition 'debug'; use --cpus-per-task 2 or less\n"
    assert not (fake_slurm / "sbatch-called").exists() and not (results / "jobs").exists()


@pytest.mark.parametrize(
    ("reason", "held"),
    [
        ("PartitionConfig", True), ("BadConstraints", True), ("PartitionNodeLimit", True), ("PartitionTimeLimit", True),
        ("QOSMaxCpuPerJobLimit", True), ("AssocMaxWallDurationPerJobLimit", True), ("QOSMinGRES", True),
        ("DependencyNeverSatisfied", True), ("ReqNodeNotAvail, UnavailableNodes:g[1-2]", True),
        ("Resources", False), ("Priority", False), ("Dependency", False), ("BeginTime", False), ("AssocMaxJobsLimit", False),
        ("QOSMaxJobsPerUserLimit", False), ("AssocGrpCpuLimit", False), ("JobHeldUser", False), ("ReqNodeNotAvail, UnavailableNodes:", False),
    ],
)  # fmt: skip
def test_which_pending_reasons_stop_the_watch(fake_slurm: Path, reason: str, held: bool) -> None:
    assert (permanent(reason) is not None) is held


def test_node_and_per_user_reasons_are_permanent_only_when_nothing_can_clear_them(fake_slurm: Path) -> None:
    (fake_slurm / "node-states").write_text("g1|allocated\ng2|down*\n")
    assert permanent("ReqNodeNotAvail, UnavailableNodes:g[1-2]") is None  # g1 is only busy
    _script(fake_slurm, "squeue", "echo 77\n")  # one of the user's jobs runs: it may free the quota
    assert permanent("QOSMaxCpuPerUserLimit") is None
    _script(fake_slurm, "squeue", "exit 0\n")
    assert permanent("QOSMaxCpuPerUserLimit") == "it alone exceeds a per-user limit of its QOS or account"


def _submission(results: Path) -> None:
    (results / "jobs").mkdir(parents=True)
    cell = {
        "key": "micro-cls|digits|linear|0",
        "record": "x.json",
        "job_id": "123_0",
        "stdout": str(results / "o"),
        "stderr": str(results / "e"),
    }
    (results / "jobs" / "20260101-000000.json").write_text(json.dumps({"submission": "20260101-000000", "kind": "eval", "cells": [cell]}))


def test_watch_into_a_pipe_prints_a_line_per_state_change_with_the_pending_reason(fake_slurm: Path, tmp_path: Path) -> None:
    results, count = tmp_path / "results", fake_slurm / "count"
    _submission(results)
    count.write_text("0")
    _script(fake_slurm, "squeue", f"""n=$(cat "{count}"); echo $((n + 1)) > "{count}"
if [ "$n" -lt 2 ]; then echo "123_0|PENDING|0:00|Priority"
elif [ "$n" -lt 4 ]; then echo "123_0|PENDING|0:00|Resources"
elif [ "$n" -lt 6 ]; then echo "123_0|RUNNING|0:03|None"; fi
""")  # fmt: skip
    _script(fake_slurm, "sacct", f'[ "$(cat "{count}")" -ge 6 ] && echo "123_0|COMPLETED|00:00:09"\nexit 0\n')
    proc = run_cli("jobs", "--watch", "--interval", "0.05", "--results", str(results), timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = [line.split(" ", 1)[1] for line in proc.stdout.splitlines()]  # after the time
    cell = "123_0 micro-cls|digits|linear|0"
    assert lines == [f"{cell} PENDING (Priority)", f"{cell} PENDING (Resources)", f"{cell} RUNNING", f"{cell} COMPLETED"], proc.stdout


def test_watch_stops_with_exit_3_and_one_line_on_a_job_slurm_holds_forever(fake_slurm: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    _submission(results)
    _script(fake_slurm, "squeue", 'echo "123_0|PENDING|0:00|PartitionConfig"\n')
    started = time.monotonic()
    proc = run_cli("jobs", "--watch", "--interval", "5", "--results", str(results), timeout=60)
    assert proc.returncode == 3 and time.monotonic() - started < 30
    assert proc.stdout.split(" ", 1)[1] == "123_0 micro-cls|digits|linear|0 PENDING (PartitionConfig)\n"
    assert proc.stderr.startswith("error: job 123_0 (micro-cls|digits|linear|0) will never start: Slurm holds it for PartitionConfig (")
    assert proc.stderr.count("\n") == 1 and "aimbench jobs --cancel 123" in proc.stderr


def _real_cluster_cpus() -> int | None:
    if shutil.which("sinfo") is None:
        return None
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%a|%c"], capture_output=True, text=True, timeout=20).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return int(out[0].split("|")[1].rstrip("+")) if out and out[0].startswith("up|") else None


@pytest.mark.e2e
def test_a_request_beyond_the_node_is_refused_and_one_that_fits_runs(tmp_path: Path, tiny_cards: Path) -> None:
    cpus = _real_cluster_cpus()
    if cpus is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run a Slurm cluster (.ci/run starts one with .ci/start-slurm.sh)")
        pytest.skip("no Slurm cluster answers here (start one: sudo bash .ci/start-slurm.sh)")
    results = tmp_path / "results"
    cell = ("eval", "-b", "micro-cls", "-t", "digits", "--limit", "60", "--epochs", "2", "--protocol", "aim-v1", "--cluster", "slurm", "--time", "10",
            "--cards", str(tiny_cards), "--results", str(results))  # fmt: skip
    refused = run_cli(*cell, "--cpus-per-task", str(cpus + 2))
    assert refused.returncode == 2 and not (results / "jobs").exists()
    assert refused.stderr == (f"error: --cpus-per-task {cpus + 2} exceeds the {cpus} CPU{'s' * (cpus != 1)} of every node in partition "
                              f"'{_default_partition()}'; use --cpus-per-task {cpus} or less\n")  # fmt: skip
    accepted = run_cli(*cell, "--cpus-per-task", str(cpus))
    assert accepted.returncode == 0, accepted.stderr
    watched = run_cli("jobs", "--watch", "--interval", "1", "--results", str(results), timeout=300)
    assert watched.returncode == 0 and watched.stdout.splitlines()[-1].endswith(" COMPLETED"), watched.stdout + watched.stderr
    assert len(list((results / "runs").glob("*.json"))) == 1


def _default_partition() -> str:
    out = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=20).stdout.split()
    return next(name.rstrip("*") for name in out if name.endswith("*"))
