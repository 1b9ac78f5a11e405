"""What ``eval`` and ``pretrain`` show while work runs in this process: rich progress bars per stage
(plain periodic lines when the console is not a terminal: a Slurm log, a pipe), then each finished
cell's layer table; the launchers call it through ``aimbench.launch.base.Display``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from aimbench.identity import CellIdentity
from aimbench.launch.base import CellResult, Display
from aimbench.launch.cell_progress import PlainProgress
from aimbench.probes import StageCallback
from aimbench.report import layer_table, to_rich

if TYPE_CHECKING:
    from aimbench.pretrain.run import PretrainSetup


class RichDisplay(Display):
    def __init__(self, console: Console) -> None:
        self.console = console
        self.running: CellIdentity | None = None  # the cell whose stages are on screen (an interrupt names it)

    @contextmanager
    def cell(self, cell: CellIdentity) -> Iterator[StageCallback]:
        self.running = cell
        if not self.console.is_terminal:  # bars in a log are nothing useful: lines there (launch.cell_progress)
            yield PlainProgress(lambda line: self.console.out(line, highlight=False))
            self.running = None
            return
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
        with Progress(*columns, console=self.console, transient=True) as progress:

            def stage(description: str, total: int) -> Callable[[int], None]:
                task_id = progress.add_task(description, total=total)
                return lambda amount: progress.advance(task_id, amount)

            yield stage
        self.running = None

    def cell_done(self, outcome: CellResult, done: int, total: int) -> None:
        status = "skipped: record exists (use --overwrite to re-run)" if outcome.skipped else "done"
        self.console.print(f"[{done}/{total}] {outcome.key} {status}")
        self.console.print(to_rich(layer_table(outcome.record)))

    @contextmanager
    def pretrain(self, setup: PretrainSetup) -> Iterator[Callable[[Any], None]]:
        from aimbench.pretrain.progress import watch

        config, world, plan = setup.config, setup.world, setup.plan
        if world.is_main:
            checkpointing = ", activation checkpointing" if plan.activation_checkpointing else ""
            self.console.print(f"{config.preset}: {config.steps} steps of {config.batch_size} images at {config.image_size} px, "
                               f"peak lr {config.effective_lr:.3g}, {world.size} rank(s) ({plan.strategy}{checkpointing}) "
                               f"on {setup.device} -> {setup.out}")  # fmt: skip
        with watch(self.console, config.steps, enabled=world.is_main) as show:
            yield show
