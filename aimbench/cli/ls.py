"""``aimbench ls``: the known backbone variants, tasks or protocols (probe recipes)."""

from __future__ import annotations

from dataclasses import replace
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.cells import cell_len
from rich.table import Table as RichTable

from aimbench.cards.registry import Registry
from aimbench.cli.options import CardsOption, make_console
from aimbench.report import Table, to_rich
from aimbench.report.listing import backbone_listing, protocol_listing, task_listing


class ListKind(str, Enum):
    backbones = "backbones"
    tasks = "tasks"
    protocols = "protocols"


# Per listing, for a terminal narrower than the table: the columns that may wrap onto several lines
# (long strings: archs, weight sources, splits), and the columns left out, first to last, when even
# wrapped the table does not fit. The first column (the name, what one types into other commands)
# is never wrapped, cut or left out.
WRAPPING: dict[ListKind, tuple[str, ...]] = {
    ListKind.backbones: ("arch", "weights"),
    ListKind.tasks: ("splits", "sources (in order)", "metric", "suites"),
    ListKind.protocols: ("description",),
}
LEFT_OUT_FIRST: dict[ListKind, tuple[str, ...]] = {
    ListKind.backbones: ("licence", "px", "family", "prefix tokens"),
    ListKind.tasks: ("suites", "classes", "splits", "train/val/test", "metric"),
    ListKind.protocols: ("card",),
}
WRAPPED_MIN = 12  # the narrowest a wrapping column becomes before columns are left out


def list_cards(
    kind: Annotated[ListKind, typer.Argument(help="What to list.")],
    pattern: Annotated[Optional[str], typer.Argument(help="Substring or glob filter on names.")] = None,
    data_root: Annotated[
        Optional[Path], typer.Option(envvar="AIMBENCH_DATA_ROOT", help="Where local dataset copies live (tasks: shows readiness).")
    ] = None,
    cards: CardsOption = None,
) -> None:
    """List known backbone variants, tasks or protocols (probe recipes).

    In a terminal the table fits its width (long cells wrap; the least useful columns are left
    out, and named, when it is very narrow); piped, every column is printed in full.

    [bold]Examples[/bold]

      aimbench ls backbones

      aimbench ls backbones 'dinov2-*'

      aimbench ls tasks --cards ./my-cards

      aimbench ls protocols
    """
    registry = Registry.load(cards or ())
    if kind is ListKind.backbones:
        table = backbone_listing(registry, pattern)
    elif kind is ListKind.protocols:
        table = protocol_listing(registry, pattern)
    else:
        from aimbench.data import default_data_root

        table = task_listing(registry, pattern, data_root or default_data_root())
    console = make_console()
    console.print(fit_width(table, console.width, WRAPPING[kind], LEFT_OUT_FIRST[kind]))


def _natural(table: Table, index: int) -> int:
    """The width a column needs to show every cell (and its header) on one line."""
    return max([cell_len(table.columns[index])] + [cell_len(row[index]) for row in table.rows])


def _min_width(table: Table, wrapping: tuple[str, ...]) -> int:
    edges = 3 * len(table.columns) + 1  # a border and one space of padding on each side of every column
    return edges + sum(
        min(_natural(table, i), WRAPPED_MIN) if name in wrapping else _natural(table, i) for i, name in enumerate(table.columns)
    )


def fit_width(table: Table, width: int, wrapping: tuple[str, ...] = (), left_out_first: tuple[str, ...] = ()) -> RichTable:
    """``table`` as a rich table no wider than ``width``: the ``wrapping`` columns wrap (folding
    strings without spaces) instead of being cut to '…', the others keep their width, and when that
    is still too wide the columns of ``left_out_first`` are dropped in order, with a note naming them."""
    dropped: list[str] = []
    for name in left_out_first:
        if _min_width(table, wrapping) <= width or name not in table.columns[1:]:
            continue
        index = table.columns.index(name)
        table = replace(
            table, columns=table.columns[:index] + table.columns[index + 1 :], rows=[r[:index] + r[index + 1 :] for r in table.rows]
        )
        dropped.append(name)
    if dropped:
        note = f"left out to fit {width} columns: {', '.join(dropped)} (a wider terminal, or piped output, shows them)"
        table = replace(table, notes=[*table.notes, note])
    rich = to_rich(table)
    for index, column in enumerate(rich.columns):
        if index and table.columns[index] in wrapping:
            column.overflow = "fold"
        else:
            column.no_wrap = True
            column.min_width = _natural(table, index)
    return rich
