"""Options shared by the ``aimbench`` commands, each declared once: the results home, extra card
folders, and the cluster options (``--cluster`` and the Slurm resources), which a command takes by
decorating itself with :func:`cluster_options` and receives as one :class:`ClusterChoice`.

The Slurm options mirror the keys of the Slurm config file (``aimbench.launch.slurm.settings``); a
value given here overrides the file's for this command only.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.console import Console

from aimbench.cards.registry import CARDS_ENV
from aimbench.errors import UserError, at_least

if TYPE_CHECKING:
    from aimbench.launch.base import Display, Launcher

CardsOption = Annotated[
    Optional[list[Path]],
    typer.Option(
        "--cards", help=f"Extra card directory with backbones/ and/or tasks/ (repeatable; also ${CARDS_ENV}).", show_default=False
    ),
]
ResultsOption = Annotated[
    Path,
    typer.Option("--results", envvar="AIMBENCH_RESULTS", help="Results home; records go to DIR/runs/."),
]
DataRootOption = Annotated[Optional[Path], typer.Option(envvar="AIMBENCH_DATA_ROOT", help="Where local dataset copies live.")]
PANEL = "Slurm (--cluster slurm)"
NodesOption = Annotated[int, typer.Option(help="Slurm nodes (per job).", rich_help_panel=PANEL)]
TasksPerNodeOption = Annotated[
    Optional[int],
    typer.Option(help="Slurm tasks (ranks) per node \\[default: --gpus-per-node, at least 1].", rich_help_panel=PANEL, show_default=False),
]


def check_job_shape(nodes: int, tasks_per_node: int | None) -> None:
    """``--nodes`` and ``--tasks-per-node`` in range, for every command that takes them."""
    at_least("--nodes", nodes, 1)
    if tasks_per_node is not None:
        at_least("--tasks-per-node", tasks_per_node, 1)


def make_console(stderr: bool = False) -> Console:
    """Wide when piped, so names and numbers in logs are never cut to '…'."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 200)


class Cluster(str, Enum):
    local = "local"
    slurm = "slurm"


def _slurm(help: str, *names: str) -> Any:
    return typer.Option(*names, help=help, rich_help_panel=PANEL, show_default=False)


# name -> (annotation, default): the cluster options, in the order --help lists them
CLUSTER_OPTIONS: dict[str, tuple[Any, Any]] = {
    "cluster": (
        Annotated[
            Cluster, typer.Option(help="local: run here | slurm: submit through submitit (eval: one job array per resource request).")
        ],
        Cluster.local,
    ),
    "slurm_config": (Annotated[Optional[Path], _slurm("Slurm settings file \\[default: slurm.toml in the user config dir].")], None),
    "partition": (Annotated[Optional[str], _slurm("Partition.")], None),
    "account": (Annotated[Optional[str], _slurm("Account.")], None),
    "qos": (Annotated[Optional[str], _slurm("Quality of service.")], None),
    "time": (Annotated[Optional[str], _slurm("Time limit per job: minutes or [D-]HH:MM:SS \\[default: 240].", "--time")], None),
    "gpus_per_node": (
        Annotated[
            Optional[int],
            _slurm(
                "GPUs per node, one rank (task) each: eval runs a cell on --nodes x this many \\[default: 1 with GPU memory set, else 0]."
            ),
        ],
        None,
    ),
    "cpus_per_task": (Annotated[Optional[int], _slurm("CPUs per task \\[default: 4].")], None),
    "mem_gb": (
        Annotated[
            Optional[float], _slurm("Host memory per job, GB \\[default: the card's memory hint for CPU-only cells, else the partition's].")
        ],
        None,
    ),
    "constraint": (Annotated[Optional[str], _slurm("Node features (--constraint).")], None),
    "array_parallelism": (Annotated[Optional[int], _slurm("Cells of an eval array running at once \\[default: 64].")], None),
    "sbatch": (Annotated[Optional[list[str]], _slurm("Any other sbatch option, KEY=VALUE (repeatable).")], None),
    "dry_run": (
        Annotated[
            bool,
            typer.Option(
                "--dry-run",
                help="Print the plan and its cost (per cell: images, backbone forwards, FLOPs, estimated time on this machine, memory; "
                "totals), with --cluster slurm the arrays and resources too; run and submit nothing. Needs no data: sizes come from the cards.",
            ),
        ],
        False,
    ),
}
SLURM_FIELDS = ("partition", "account", "qos", "time", "gpus_per_node", "cpus_per_task", "mem_gb", "constraint", "array_parallelism")


def sbatch_pairs(values: list[str] | None) -> dict[str, str] | None:
    if not values:
        return None
    pairs = {}
    for value in values:
        key, equals, text = value.partition("=")
        if not equals or not key.strip():
            raise UserError(f"--sbatch '{value}' is not KEY=VALUE (e.g. --sbatch reservation=cvpr)")
        pairs[key.strip()] = text.strip()
    return pairs


@dataclass(frozen=True)
class ClusterChoice:
    """Where a command's work runs, as the cluster options said."""

    cluster: Cluster
    values: dict[str, Any]  # the other cluster options as given (None: the settings file's value)

    @property
    def dry_run(self) -> bool:
        return bool(self.values.get("dry_run"))

    def launcher(self, display: Display | None = None, **slurm: Any) -> Launcher:
        """The launcher for this choice (``slurm``: extra SlurmLauncher arguments, e.g. nodes)."""
        if self.cluster is Cluster.local:
            from aimbench.launch.local import LocalLauncher

            return LocalLauncher(display)
        from aimbench.launch.slurm.launcher import SlurmLauncher
        from aimbench.launch.slurm.settings import SlurmSettings

        overrides = {name: self.values.get(name) for name in SLURM_FIELDS if name in self.values}
        settings = SlurmSettings.load(self.values.get("slurm_config"), sbatch=sbatch_pairs(self.values.get("sbatch")), **overrides)
        return SlurmLauncher(settings, **slurm)


def cluster_options(*, leave_out: tuple[str, ...] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command the cluster options (less ``leave_out``) and call it with ``cluster=ClusterChoice``."""
    chosen = {name: spec for name, spec in CLUSTER_OPTIONS.items() if name not in leave_out}

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != "cluster"]
        added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
                 for name, (annotation, default) in chosen.items()]  # fmt: skip

        @functools.wraps(command)
        def run(*args: Any, **kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in chosen}
            return command(*args, cluster=ClusterChoice(values.pop("cluster"), values), **kwargs)

        combined = signature.replace(parameters=[*own, *added])
        run.__signature__ = combined  # type: ignore[attr-defined]  # inspect reads it; typeshed's functions do not declare it
        run.__annotations__ = {p.name: p.annotation for p in combined.parameters.values()}
        return run

    return decorate
