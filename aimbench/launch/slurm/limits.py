"""What a partition can give one job, read from Slurm before submitting, and the refusal of a request beyond it.

Slurm accepts a job that can never start (asking for more CPUs than any node has, say) and keeps it
pending forever with a reason such as ``PartitionConfig``; a user then sees nothing happen. So
before anything is submitted, the partition's limits are read from the controller:

* ``scontrol --all --oneliner show partition``: the partitions (hidden ones too), the default one,
  ``MaxTime``, ``MaxNodes``, ``MaxCPUsPerNode``, ``MaxMemPerNode``, ``AllowAccounts`` /
  ``DenyAccounts`` and ``AllowQos`` / ``DenyQos``;
* ``sinfo --Node``: each node of each partition with its CPUs, memory (MB), GRES (GPUs) and
  features (what ``--constraint`` matches).

and each job's submitit parameters (``resources`` for an eval array, ``settings`` for
pre-training) are checked against them: the partition exists, the account and QOS may use it, the
time limit is within ``MaxTime``, the nodes within the partition's, the constraint matches a node,
and some node (among those the constraint allows) has the CPUs (``cpus_per_task`` x
``tasks_per_node``), GPUs and memory asked for, each alone and all together. A request beyond
them is one :class:`UserError` naming the option to change and the largest value that fits.

When the limits cannot be read (no ``sinfo``, a Slurm error, a controller that does not answer)
nothing is checked: the submission goes on and fails, or not, as it did before (``submission``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from aimbench.errors import UserError
from aimbench.launch.slurm.jobs import run_slurm
from aimbench.launch.slurm.settings import SlurmSettings

TIMEOUT_S = 30  # a controller that does not answer makes scontrol retry for about 10 s
UNLIMITED = ("UNLIMITED", "INFINITE", "NONE", "")


@dataclass(frozen=True)
class Node:
    name: str
    cpus: int
    memory_mb: int
    gpus: int
    features: frozenset[str]


@dataclass(frozen=True)
class Partition:
    name: str
    fields: dict[str, str]  # scontrol's KEY=VALUE pairs, as it writes them
    nodes: tuple[Node, ...]

    def limit(self, key: str) -> str | None:
        """A field's value, None where Slurm says there is no limit."""
        value = self.fields.get(key, "")
        return None if value.upper() in UNLIMITED else value

    def names(self, key: str) -> frozenset[str] | None:
        """An allow/deny list (``AllowAccounts``); None for ALL or absent."""
        value = self.limit(key)
        return None if value is None or value.upper() == "ALL" else frozenset(value.split(","))


def slurm_minutes(text: str) -> int | None:
    """Slurm's time forms (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``) in whole minutes, rounded up; None: no limit."""
    if text.strip().upper() in UNLIMITED:
        return None
    days, _, clock = text.strip().rpartition("-")
    parts = [int(part) for part in clock.split(":")]
    if days:
        hours, minutes, seconds = (parts + [0, 0])[:3]
    else:
        hours, minutes, seconds = ([0, 0] + parts)[-3:] if len(parts) > 1 else (0, parts[0], 0)
    return int(days or 0) * 1440 + hours * 60 + minutes + (1 if seconds else 0)


def _gpus(gres: str) -> int:
    """GPUs in a GRES string such as ``gpu:a100:4(S:0-1),shard:8``."""
    total = 0
    for item in re.sub(r"\([^)]*\)", "", gres).split(","):
        kind, *rest = item.strip().split(":")
        if kind == "gpu" and rest and rest[-1].isdigit():
            total += int(rest[-1])
    return total


def read_partitions() -> tuple[dict[str, Partition], str | None] | None:
    """Every partition with its nodes, and the default partition's name; None when Slurm does not answer."""
    shown = run_slurm(["scontrol", "--all", "--oneliner", "show", "partition"], TIMEOUT_S)
    listed = (
        run_slurm(["sinfo", "--all", "--Node", "--noheader", "--format", "%R|%N|%c|%m|%G|%f"], TIMEOUT_S) if shown is not None else None
    )
    if shown is None or listed is None:
        return None
    nodes: dict[str, list[Node]] = {}
    for line in listed.splitlines():
        try:
            partition, name, cpus, memory, gres, features = line.split("|")
            node = Node(name, int(cpus.rstrip("+")), int(memory.rstrip("+")), _gpus(gres), frozenset(features.split(",")) - {"(null)"})
        except ValueError:
            continue  # a line this version writes differently: that node is not checked
        nodes.setdefault(partition, []).append(node)
    partitions, default = {}, None
    for line in shown.splitlines():
        fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
        if "PartitionName" in fields:
            name = fields["PartitionName"]
            partitions[name] = Partition(name, fields, tuple(nodes.get(name, ())))
            default = name if fields.get("Default") == "YES" else default
    return partitions, default


def matches(constraint: str, features: frozenset[str]) -> bool:
    """Whether a node with ``features`` satisfies ``constraint`` (``a``, ``a&b``, ``a|b``, ``[a|b]``, ``a*2``)."""
    plain = re.sub(r"\*\d+", "", constraint).translate(str.maketrans("", "", "[]()"))
    return any(all(name in features for name in re.split(r"[&,]", term) if name) for term in plain.split("|"))


def _largest(values: Iterable[int]) -> tuple[int, bool]:
    """The largest value and whether every node has it."""
    seen = list(values)
    return max(seen), len(set(seen)) == 1


def _of_nodes(amount: str, same: bool, where: str) -> str:
    return f"the {amount} of every node in {where}" if same else f"the {amount} of the largest node in {where}"


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("s" if n != 1 else "")


def _gb(mb: float) -> str:
    return f"{math.floor(mb / 1024 * 10) / 10:g} GB"


class Request:
    """One job's submitit parameters, read as what Slurm will be asked for."""

    def __init__(self, parameters: dict[str, Any], settings: SlurmSettings) -> None:
        extra = parameters.get("slurm_additional_parameters") or {}
        self.settings = settings

        def named(key: str) -> str | None:
            value = extra.get(key, parameters.get(f"slurm_{key}"))
            return None if value is None else str(value)

        self.partition, self.account, self.qos, self.constraint = (named(k) for k in ("partition", "account", "qos", "constraint"))
        self.minutes = int(parameters.get("timeout_min", 0))
        self.nodes = int(parameters.get("nodes", 1))
        self.tasks = int(parameters.get("tasks_per_node", 1))
        self.cpus_per_task = int(parameters.get("cpus_per_task", 1))
        self.gpus = int(parameters.get("gpus_per_node", 0) or 0)
        mem_gb = parameters.get("mem_gb")
        self.memory_mb = None if mem_gb is None else (int(mem_gb) * 1024 if mem_gb == int(mem_gb) else int(mem_gb * 1024))  # as submitit
        self.mem_gb = mem_gb

    @property
    def cpus(self) -> int:
        return self.cpus_per_task * self.tasks

    def constraint_option(self) -> str:
        chosen = self.settings.constraint is not None or self.constraint is None
        return (
            f"--constraint '{self.constraint}'" if chosen else f"the constraint '{self.constraint}' (from gpu_types in the settings file)"
        )


def check_request(request: Request, partitions: dict[str, Partition], default: str | None) -> None:
    """Raise a one-line :class:`UserError` when ``request`` cannot run in its partition."""
    name = request.partition or default
    if name is None:
        return  # no default partition: sbatch says so itself
    if name not in partitions:
        raise UserError(f"--partition '{name}' does not exist; Slurm has: {', '.join(sorted(partitions))}")
    partition = partitions[name]
    where = f"partition '{name}'"
    for value, option, key in ((request.account, "--account", "Accounts"), (request.qos, "--qos", "Qos")):
        allowed, denied = partition.names(f"Allow{key}"), partition.names(f"Deny{key}")
        if value is not None and ((allowed is not None and value not in allowed) or (denied is not None and value in denied)):
            which = f"Allow{key}={','.join(sorted(allowed))}" if allowed is not None else f"Deny{key}={','.join(sorted(denied or ()))}"
            raise UserError(f"{option} {value} may not use {where} ({which}); use another {option} or --partition")
    max_time = partition.limit("MaxTime")
    limit = slurm_minutes(max_time) if max_time else None
    if limit is not None and request.minutes > limit:
        raise UserError(f"--time {request.minutes} (minutes) exceeds the time limit of {where} (MaxTime {max_time}); "
                        f"use --time {limit} or less")  # fmt: skip
    max_nodes = [int(v) for v in (partition.limit("MaxNodes"), partition.fields.get("TotalNodes")) if v and v.isdigit()]
    if max_nodes and request.nodes > min(max_nodes):
        raise UserError(
            f"--nodes {request.nodes} exceeds the {min(max_nodes)} node(s) {where} allows; use --nodes {min(max_nodes)} or less"
        )
    _check_nodes(request, partition, where)


def _check_nodes(request: Request, partition: Partition, where: str) -> None:
    nodes = list(partition.nodes)
    if not nodes:
        return  # sinfo listed none (a partition without nodes): nothing to compare with
    if request.constraint is not None:
        nodes = [node for node in nodes if matches(request.constraint, node.features)]
        if not nodes:
            features = sorted(set().union(*(node.features for node in partition.nodes)))
            known = f"their features: {', '.join(features)}" if features else "its nodes have no features"
            raise UserError(f"{request.constraint_option()} matches no node of {where} ({known}); use another --constraint or --partition")
        where = f"{where} with {request.constraint_option()}"
    cap = partition.limit("MaxCPUsPerNode")
    cpus, same = _largest(min(node.cpus, int(cap)) if cap and cap.isdigit() else node.cpus for node in nodes)
    if request.cpus > cpus:
        have = _of_nodes(_count(cpus, "CPU"), same, where)
        if request.tasks == 1:
            raise UserError(f"--cpus-per-task {request.cpus_per_task} exceeds {have}; use --cpus-per-task {cpus} or less")
        if request.tasks > cpus:
            raise UserError(f"{request.tasks} tasks per node exceed {have}; use --tasks-per-node {cpus} or less")
        raise UserError(f"--cpus-per-task {request.cpus_per_task} x {request.tasks} tasks per node exceeds {have}; "
                        f"use --cpus-per-task {cpus // request.tasks} or less")  # fmt: skip
    gpus, same = _largest(node.gpus for node in nodes)
    if request.gpus > gpus:
        if gpus == 0:
            raise UserError(f"--gpus-per-node {request.gpus}: no node of {where} has a GPU; use --gpus-per-node 0 or a GPU --partition")
        raise UserError(
            f"--gpus-per-node {request.gpus} exceeds {_of_nodes(_count(gpus, 'GPU'), same, where)}; use --gpus-per-node {gpus} or less"
        )
    cap = partition.limit("MaxMemPerNode")
    memory, same = _largest(min(node.memory_mb, int(cap)) if cap and cap.isdigit() else node.memory_mb for node in nodes)
    if request.memory_mb is not None and request.memory_mb > memory:
        asked = (
            f"--mem-gb {request.mem_gb:g}"
            if request.settings.mem_gb is not None
            else f"memory {request.mem_gb:g} GB (the card's need + runtime)"
        )
        raise UserError(
            f"{asked} exceeds {_of_nodes(_gb(memory), same, where)}; use --mem-gb {math.floor(memory / 1024 * 10) / 10:g} or less"
        )
    if not any(node.cpus >= request.cpus and node.gpus >= request.gpus and (request.memory_mb or 0) <= node.memory_mb for node in nodes):
        raise UserError(f"no node of {where} has {request.cpus} CPU(s), {request.gpus} GPU(s) and {request.mem_gb or 0:g} GB together; "
                        f"lower --cpus-per-task, --gpus-per-node or --mem-gb, or use another --partition")  # fmt: skip


def check_limits(settings: SlurmSettings, jobs: Sequence[dict[str, Any]]) -> None:
    """Refuse, in one line, the first of ``jobs`` (submitit parameters) the cluster cannot run; silent when Slurm cannot be read."""
    read = read_partitions()
    if read is None:
        return
    partitions, default = read
    for parameters in jobs:
        check_request(Request(parameters, settings), partitions, default)
