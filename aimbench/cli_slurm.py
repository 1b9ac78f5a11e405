"""``--cluster slurm`` for ``aimbench eval``: the Slurm options and the plan/submission output.

The options mirror the keys of the Slurm config file (``aimbench.launch.slurm_settings``); a
value given here overrides the file's for this command only.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from aimbench.errors import UserError

if TYPE_CHECKING:
    from aimbench.launch.cells import Cell
    from aimbench.launch.options import RunOptions
    from aimbench.launch.slurm_settings import SlurmSettings

PANEL = "Slurm (--cluster slurm)"


class Cluster(str, Enum):
    local = "local"
    slurm = "slurm"


ClusterOption = Annotated[
    Cluster, typer.Option(help="local: run here, one cell after another | slurm: job arrays through submitit (one per resource request).")
]
SlurmConfigOption = Annotated[
    Optional[Path],
    typer.Option(help="Slurm settings file [default: slurm.toml in the user config dir].", rich_help_panel=PANEL, show_default=False),
]
PartitionOption = Annotated[Optional[str], typer.Option(help="Partition.", rich_help_panel=PANEL, show_default=False)]
AccountOption = Annotated[Optional[str], typer.Option(help="Account.", rich_help_panel=PANEL, show_default=False)]
QosOption = Annotated[Optional[str], typer.Option(help="Quality of service.", rich_help_panel=PANEL, show_default=False)]
TimeOption = Annotated[
    Optional[str],
    typer.Option("--time", help="Time limit per cell: minutes or [D-]HH:MM:SS [default: 240].", rich_help_panel=PANEL, show_default=False),
]
GpusOption = Annotated[
    Optional[int],
    typer.Option(help="GPUs per cell [default: 1 where the settings name GPU memory, else 0].", rich_help_panel=PANEL, show_default=False),
]
CpusOption = Annotated[Optional[int], typer.Option(help="CPUs per cell [default: 4].", rich_help_panel=PANEL, show_default=False)]
MemOption = Annotated[
    Optional[float],
    typer.Option(
        help="Host memory per cell, GB [default: the card's memory hint for CPU-only cells, else the partition's].",
        rich_help_panel=PANEL,
        show_default=False,
    ),
]
ConstraintOption = Annotated[Optional[str], typer.Option(help="Node features (--constraint).", rich_help_panel=PANEL, show_default=False)]
ParallelismOption = Annotated[
    Optional[int], typer.Option(help="Cells of the array running at once [default: 64].", rich_help_panel=PANEL, show_default=False)
]
SbatchOption = Annotated[
    Optional[list[str]], typer.Option(help="Any other sbatch option, KEY=VALUE (repeatable).", rich_help_panel=PANEL, show_default=False)
]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Print the plan (cells, resources, what is skipped); submit nothing.", rich_help_panel=PANEL)
]


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


def run_on_slurm(cells: list[Cell], options: RunOptions, settings: SlurmSettings, rerun: bool, dry_run: bool, console: Console) -> None:
    """Print the plan; unless ``dry_run``, submit it and say where its state and logs are."""
    from aimbench.launch import slurm

    planned = slurm.plan(cells, options, settings, rerun)
    arrays = f" in {len(planned.arrays)} array(s)" if len(planned.arrays) > 1 else ""
    table = Table(title=f"{len(planned.to_run)} cell(s) to submit{arrays}, {len(planned.skipped)} skipped (record exists; --rerun to redo)")
    for column in ("cell", "action", "array", "memory need"):
        table.add_column(column)
    for number, array in enumerate(planned.arrays, 1):
        for cell, need in zip(array.cells, array.needs):
            table.add_row(cell.key, "submit", str(number), need.describe())
    for cell in planned.skipped:
        table.add_row(cell.key, "skip", "", "")
    console.print(table)
    for number, array in enumerate(planned.arrays, 1):
        shown = {k: v for k, v in array.parameters.items() if v not in (None, {}, 0) or k == "gpus_per_node"}
        console.print(f"array {number}, resources per cell: " + ", ".join(f"{k}={v}" for k, v in shown.items()), soft_wrap=True)
    if dry_run or not planned.to_run:
        console.print("dry run: nothing submitted" if dry_run else "nothing to submit")
        return
    submission = slurm.submit(planned, options)
    ids = sorted({job.job_id.split("_")[0] for job in submission.jobs})
    console.print(f"submitted {len(submission.jobs)} cell(s) as Slurm job {', '.join(ids)}; state: {submission.state_file}; "
                  f"logs: {submission.state_file.with_suffix('')}/", soft_wrap=True)  # fmt: skip
