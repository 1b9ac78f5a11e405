"""``aimbench ls``: the known backbone variants, tasks or protocols (probe recipes)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from aimbench.cards.registry import Registry
from aimbench.cli.options import CardsOption, make_console
from aimbench.report import to_rich
from aimbench.report.listing import backbone_listing, protocol_listing, task_listing


class ListKind(str, Enum):
    backbones = "backbones"
    tasks = "tasks"
    protocols = "protocols"


def list_cards(
    kind: Annotated[ListKind, typer.Argument(help="What to list.")],
    pattern: Annotated[Optional[str], typer.Argument(help="Substring or glob filter on names.")] = None,
    data_root: Annotated[
        Optional[Path], typer.Option(envvar="AIMBENCH_DATA_ROOT", help="Where local dataset copies live (tasks: shows readiness).")
    ] = None,
    cards: CardsOption = None,
) -> None:
    """List known backbone variants, tasks or protocols (probe recipes).

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
    make_console().print(to_rich(table))
