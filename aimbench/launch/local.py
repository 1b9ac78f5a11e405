"""Running cells in this process, one after another, with rich progress bars.

Resume works at the cell level: a cell whose record file already exists (same configuration
hash) is skipped unless ``overwrite`` is set, so an interrupted matrix continues where it
stopped. The Slurm launcher runs the very same :func:`run_cell`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from aimbench.cards.registry import Registry
from aimbench.launch.cells import Cell
from aimbench.launch.options import RunOptions
from aimbench.launch.run_cell import run_cell
from aimbench.store.records import finished, record_path


@dataclass(frozen=True)
class CellOutcome:
    cell: Cell
    record: Path
    skipped: bool


def run_local(cells: Iterable[Cell], options: RunOptions, overwrite: bool = False, console: Console | None = None) -> Iterator[CellOutcome]:
    """Run ``cells`` in order, yielding each outcome as soon as its record is written."""
    registry = Registry.load(options.card_dirs)
    for cell in cells:
        existing = record_path(options.results_dir, cell.record_name(registry))
        if not overwrite and finished(existing):
            yield CellOutcome(cell, existing, skipped=True)
            continue
        columns = (
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(),
        )  # fmt: skip
        with Progress(*columns, console=console, transient=True) as progress:

            def stage(description: str, total: int) -> Callable[[int], None]:
                task_id = progress.add_task(description, total=total)
                return lambda amount: progress.advance(task_id, amount)

            path = run_cell(cell, options, stage)
        yield CellOutcome(cell, path, skipped=False)
