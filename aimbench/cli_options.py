"""Options and output helpers shared by the ``aimbench`` sub-command modules."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from aimbench.cards.registry import CARDS_ENV

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


def make_console(stderr: bool = False) -> Console:
    """Wide when piped, so names and numbers in logs are never cut to '…'."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 200)
