"""``aimbench tasks prepare|check``: get the benchmark data onto this machine and verify it.

Thin like the main CLI: the work is in :mod:`aimbench.data.prepare` and :mod:`aimbench.data.check`.
Both commands exit 1 when a requested task is not ready afterwards, after printing the table, so a
script (or CI) can gate an evaluation on them; ``prepare`` stopped by Ctrl-C prints the table and
exits 130.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from aimbench.cards.registry import Registry
from aimbench.cards.task_card import TaskSpec
from aimbench.cli.options import CardsOption, DataRootOption, make_console
from aimbench.errors import UserError
from aimbench.identity import DEFAULT_PROTOCOLS
from aimbench.report.render import to_rich

tasks_app = typer.Typer(help="Prepare and check the benchmark datasets (tasks/*.toml).", no_args_is_help=True)

NamesArgument = Annotated[list[str], typer.Argument(help="Task or suite names or tag:NAME ('all' = the aim15 suite).")]


def _resolve(names: list[str], cards: list[Path] | None) -> list[TaskSpec]:
    if not names:
        raise UserError("name at least one task or suite, e.g. 'aimbench tasks check all'")
    return Registry.load(cards or ()).expand_tasks(names)


def _root(data_root: Path | None) -> Path:
    from aimbench.data import default_data_root

    return data_root or default_data_root()


@tasks_app.command("prepare")
def prepare(names: NamesArgument, data_root: DataRootOption = None, cards: CardsOption = None) -> None:
    """Fetch what can be fetched (verified, resumable downloads; HF snapshots) into the card layouts.

    A failing task is one row of the summary (and one 'error:' line on stderr) and the others go on;
    Ctrl-C keeps partial downloads, which the same command resumes.

    [bold]Examples[/bold]

      aimbench tasks prepare dtd --data-root /data/aimbench

      aimbench tasks prepare all
    """
    from aimbench.cli.download_bar import meter_for
    from aimbench.data.prepare import FAILED, PREPARED, READY, prepare_tasks
    from aimbench.report.task_status import prepare_table

    console = make_console()
    tasks = _resolve(names, cards)

    def say(task: str, message: str) -> None:
        console.print(f"{task}: {message}", markup=False, highlight=False)

    outcomes, interrupted = prepare_tasks(tasks, _root(data_root), say, meter=meter_for(console))
    console.print(to_rich(prepare_table(outcomes)))
    errors = make_console(stderr=True)
    for outcome in outcomes:  # whole, one line each: a table cell wraps, a log is searched by line
        if outcome.status == FAILED:
            errors.print(f"error: {outcome.task}: {outcome.detail}", markup=False, highlight=False, soft_wrap=True)
    if interrupted:
        raise typer.Exit(130)
    if any(o.status not in (READY, PREPARED) for o in outcomes):
        raise typer.Exit(1)


@tasks_app.command("check")
def check(
    names: NamesArgument,
    data_root: DataRootOption = None,
    decode: Annotated[
        bool,
        typer.Option(help="Decode every image (unreadable files, duplicates across splits); --no-decode checks listings and sizes only."),
    ] = True,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes for decoding.")] = 0,
    cards: CardsOption = None,
) -> None:
    """Verify local copies: split sizes, class count, unreadable images, duplicates across splits.

    [bold]Examples[/bold]

      aimbench tasks check all

      aimbench tasks check cifar10 food101 --workers 8
    """
    from aimbench.data.check import check_task
    from aimbench.report.task_status import check_table

    console = make_console()
    root = _root(data_root)
    registry = Registry.load(cards or ())
    tasks = registry.expand_tasks(names)
    val_fraction = registry.protocol(DEFAULT_PROTOCOLS["linear"]).val_fraction.value  # for cards that leave it to the protocol
    reports = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:

        def stage(description: str, total: int) -> Callable[[int], None]:
            task_id = progress.add_task(description, total=total)
            return lambda amount: progress.advance(task_id, amount)

        for task in tasks:
            reports.append(check_task(task, root, decode=decode, workers=workers, stage=stage, val_fraction=val_fraction))
    console.print(to_rich(check_table(reports, {t.name: t.expected_sizes for t in tasks})))
    console.print(f"data root: {root}")
    if not all(r.ok for r in reports):
        raise typer.Exit(1)
