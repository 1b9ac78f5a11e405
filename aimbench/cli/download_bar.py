"""The terminal side of download progress: a rich bar per transfer, or the plain lines of
:class:`~aimbench.data.progress.PlainMeter` when stdout is no terminal (Slurm logs, CI)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from aimbench.data.progress import ByteMeter, PlainMeter


class RichMeter:
    """A bar per transfer with bytes, rate and time left, for a terminal; gone when it ends."""

    def __init__(self, console: Console) -> None:
        columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
        self.progress = Progress(*columns, console=console, transient=True)
        self.task: TaskID | None = None

    def start(self, name: str, total: int | None, done: int) -> None:
        self.finish()
        self.progress.start()
        self.task = self.progress.add_task(name, total=total, completed=done)

    def advance(self, amount: int) -> None:
        if self.task is not None:
            self.progress.advance(self.task, amount)

    def finish(self) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None
        self.progress.stop()


def meter_for(console: Console) -> ByteMeter:
    """A live bar on a terminal, periodic lines otherwise (Slurm logs, CI)."""
    return RichMeter(console) if console.is_terminal else PlainMeter(lambda line: console.print(line, markup=False, highlight=False))
