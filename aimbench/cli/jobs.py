"""``aimbench jobs``: the submitted cells with their Slurm state, logs and errors; ``--cancel``; ``--watch``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.live import Live
from rich.table import Table

from aimbench.cli.options import ResultsOption, make_console
from aimbench.launch.base import JobRow


def _rows(results: Path) -> list[JobRow]:
    """Submitted Slurm jobs, then local cells that stopped before their record."""
    from aimbench.launch.local import LocalLauncher
    from aimbench.launch.slurm.launcher import SlurmLauncher
    from aimbench.launch.slurm.settings import SlurmSettings

    return [*SlurmLauncher(SlurmSettings()).status(results), *LocalLauncher().status(results)]


def _table(results: Path) -> tuple[Table, bool]:
    from aimbench.launch.slurm.jobs import error_tail

    rows = _rows(results)
    table = Table(title=f"aimbench jobs ({results / 'jobs'})")
    for column in ("submission", "cell", "job", "state", "progress", "elapsed", "record", "log / error"):
        table.add_column(column, overflow="fold")
    for row in rows:
        detail = error_tail(row) if row.failed else (str(row.stdout) if row.job_id else "")
        style = "red" if row.failed else ("green" if row.state == "COMPLETED" else None)
        table.add_row(row.submission, row.cell, row.job_id, row.state, row.progress, row.elapsed, "yes" if row.record else "", detail,
                      style=style)  # fmt: skip
    done = all(row.finished for row in rows)
    return table, done


def jobs(
    results: ResultsOption = Path("results"),
    watch: Annotated[
        bool, typer.Option("--watch", help="Refresh until every job has finished (Ctrl-C stops watching, not the jobs).")
    ] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes with --watch.")] = 5.0,
    cancel: Annotated[
        Optional[str], typer.Option(help="Cancel unfinished jobs: a job id, an array id, or all.", show_default=False)
    ] = None,
) -> None:
    """Submitted cells (from RESULTS/jobs) with their Slurm state, progress, elapsed time, log path, and the error of failed ones.

    [bold]Examples[/bold]

      aimbench jobs

      aimbench jobs --watch

      aimbench jobs --cancel all
    """
    console = make_console()
    if cancel is not None:
        from aimbench.launch.slurm.launcher import SlurmLauncher
        from aimbench.launch.slurm.settings import SlurmSettings

        ids = SlurmLauncher(SlurmSettings()).cancel(results, cancel)
        console.print(f"cancelled {len(ids)} job(s){': ' + ' '.join(ids) if ids else ''}")
        return
    table, done = _table(results)
    if not table.row_count:
        console.print(f"no submissions in {results / 'jobs'} (submit with: aimbench eval ... --cluster slurm)")
        return
    if not watch or done:
        console.print(table)
        return
    try:
        with Live(table, console=console, refresh_per_second=1) as live:
            while not done:
                time.sleep(interval)
                table, done = _table(results)
                live.update(table)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
