"""``aimbench jobs``: the submitted cells with their Slurm state, logs and errors; ``--cancel``; ``--watch``."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.live import Live
from rich.table import Table

from aimbench.cli.options import ResultsOption, make_console
from aimbench.errors import UserError
from aimbench.launch.base import JobRow

QUIET_S = 60.0  # --watch into a file or pipe: a summary line at least this often


class HeldJob(UserError):
    """A watched job that Slurm will never start; its own exit code, so a script can tell it from a usage error."""

    exit_code = 3


def _rows(results: Path) -> list[JobRow]:
    """Submitted Slurm jobs, then local cells that stopped before their record."""
    from aimbench.launch.local import LocalLauncher
    from aimbench.launch.slurm.launcher import SlurmLauncher
    from aimbench.launch.slurm.settings import SlurmSettings

    return [*SlurmLauncher(SlurmSettings()).status(results), *LocalLauncher().status(results)]


def _table(results: Path, rows: list[JobRow]) -> tuple[Table, bool]:
    from aimbench.launch.slurm.jobs import error_tail

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
        bool,
        typer.Option(
            "--watch",
            help="Refresh until every job has finished (Ctrl-C stops watching, not the jobs).",
        ),
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
    table, done = _table(results, _rows(results))
    if not table.row_count:
        console.print(f"no submissions in {results / 'jobs'} (submit with: aimbench eval ... --cluster slurm)")
        return
    if not watch or done:
        console.print(table)
        return
    try:
        if not console.is_terminal:
            _watch_plainly(results, interval)
            return
        with Live(table, console=console, refresh_per_second=1) as live:
            while not done:
                time.sleep(interval)
                rows = _rows(results)
                table, done = _table(results, rows)
                live.update(table)
                _stop_if_held(rows)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _stop_if_held(rows: list[JobRow]) -> None:
    """End the watch, in one line, when a job waits for a reason that never clears by itself (``slurm.held``)."""
    from aimbench.launch.slurm.held import held_line, pending_reason, permanent

    for row in rows:
        reason = pending_reason(row)
        why = permanent(reason) if reason else None
        if why is not None:
            raise HeldJob(held_line(row, why))


def _plain(row: JobRow) -> str:
    from aimbench.launch.slurm.held import pending_reason
    from aimbench.launch.slurm.jobs import error_tail

    reason = pending_reason(row)
    detail = f" ({reason})" if reason else (f": {error_tail(row, lines=1)}" if row.failed else "")
    return f"{time.strftime('%H:%M:%S')} {row.job_id or '-'} {row.cell} {row.state}{detail}"


def _watch_plainly(results: Path, interval: float) -> None:
    """Where output is a file or a pipe: one line per state change (a pending reason is part of the state),
    and a summary line when nothing changed for ``QUIET_S``, so a log never goes silent for minutes."""
    shown: dict[tuple[str, str, str], tuple[str, str]] = {}
    last = time.monotonic()
    while True:
        rows = _rows(results)
        for row in rows:
            key, now = (row.submission, row.cell, row.job_id), (row.state, row.progress if row.state == "PENDING" else "")
            if shown.get(key) != now:
                shown[key] = now
                print(_plain(row), flush=True)
                last = time.monotonic()
        _stop_if_held(rows)
        unfinished = [row for row in rows if not row.finished]
        if not unfinished:
            return
        if time.monotonic() - last >= QUIET_S:
            counts = Counter(row.state for row in unfinished)
            print(f"{time.strftime('%H:%M:%S')} still unfinished: " + ", ".join(f"{n} {state}" for state, n in counts.items()), flush=True)
            last = time.monotonic()
        time.sleep(interval)
