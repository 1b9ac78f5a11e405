"""Rendering report tables as a rich terminal table, Markdown, or CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from rich.table import Table as RichTable

from aimbench.report.tables import Table

FORMATS = ("table", "markdown", "csv")


def _looks_numeric(text: str) -> bool:
    head = text.split(" ", 1)[0].rstrip("*")
    return head == "–" or head.replace(".", "", 1).replace("/", "").replace("e-", "").isdigit()


def to_rich(table: Table) -> RichTable:
    rich = RichTable(title=table.title, caption="\n".join(table.notes) or None, caption_justify="left")
    for i, column in enumerate(table.columns):
        numeric = bool(table.rows) and all(_looks_numeric(row[i]) for row in table.rows)
        rich.add_column(column, justify="right" if numeric else "left")
    for row in table.rows:
        rich.add_row(*row)
    return rich


def to_markdown(table: Table) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    lines = [f"**{table.title}**", "", line(table.columns), line(["---"] * len(table.columns))]
    lines += [line(row) for row in table.rows]
    lines += [""] + [f"_{note}_" for note in table.notes]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict[str, Any]]) -> str:
    """Long-format CSV (one row per backbone, task, probe) with raw fractions, for spreadsheets."""
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return out.getvalue()
