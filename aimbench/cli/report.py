"""``aimbench report`` and ``aimbench export``: thin dispatch over :mod:`aimbench.report.views`."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from aimbench.cards.registry import Registry, card_roots
from aimbench.cli.options import CardsOption, ResultsOption, make_console
from aimbench.errors import UserError
from aimbench.launch.preflight import writable_folder
from aimbench.report import Table, to_csv, to_latex, to_markdown, to_rich
from aimbench.report.filters import build_filters
from aimbench.report.pairs import compare_view
from aimbench.report.views import cell_view, export_tables, layers_view, leaderboard_view, sql_view
from aimbench.store.db import PUBLISHED_DIR, open_session


# The --format choices, spelled out so a type checker sees the members; they follow FORMATS and
# EXPORT_FORMATS, in their order (tests/test_cli_report.py holds them together).
class ReportFormat(str, Enum):
    table = "table"
    markdown = "markdown"
    csv = "csv"
    latex = "latex"


class ExportFormat(str, Enum):
    parquet = "parquet"
    csv = "csv"


class View(str, Enum):
    leaderboard = "leaderboard"
    layers = "layers"
    cell = "cell"
    compare = "compare"


class IntervalStyle(str, Enum):  # follows aimbench.report.intervals.STYLES
    pm = "pm"
    range = "range"
    none = "none"


class Depth(str, Enum):
    block = "block"
    relative = "relative"


class LayerChoice(str, Enum):
    best = "best"
    last = "last"


def _print(tables: list[Table], long_rows: list[dict[str, Any]], fmt: str) -> None:
    console = make_console()
    if fmt == "csv":
        sys.stdout.write(to_csv(long_rows))
        return
    for table in tables:
        if fmt == "markdown":
            sys.stdout.write(to_markdown(table))
        elif fmt == "latex":
            sys.stdout.write(to_latex(table))
        else:
            console.print(to_rich(table))


def report(
    view: Annotated[
        View, typer.Argument(help="leaderboard | layers (curves per block) | cell (one cell in full) | compare (two backbones, paired).")
    ] = View.leaderboard,
    names: Annotated[
        Optional[list[str]],
        typer.Argument(help="For 'cell': a cell key backbone|task|probe|seed, or a unique prefix; for 'compare': backbones A and B."),
    ] = None,
    results: ResultsOption = Path("results"),
    format: Annotated[
        ReportFormat, typer.Option("--format", "-f", help="table | markdown | csv (long form) | latex (booktabs).")
    ] = ReportFormat("table"),
    backbone: Annotated[
        Optional[str], typer.Option("--backbone", "-b", help="Backbones: names or patterns, comma-separated ('aim-*').")
    ] = None,
    task: Annotated[
        Optional[str], typer.Option("--task", "-t", help="Tasks: names, patterns, suites or tag:NAME, comma-separated.")
    ] = None,
    probe: Annotated[Optional[str], typer.Option(help="Probe kinds: linear, attentive, knn, official:* ...")] = None,
    suite: Annotated[Optional[str], typer.Option(help="Only this suite's tasks, in its order (aim15 = the paper's Table 6).")] = None,
    since: Annotated[
        Optional[str], typer.Option(help="Only records written since: 2026-11-01, 2026-11-01T12:00, or an age (7d, 12h).")
    ] = None,
    paper: Annotated[bool, typer.Option("--paper/--no-paper", help="Show the published numbers beside measured rows.")] = True,
    sql: Annotated[Optional[str], typer.Option(help="Run a query over runs, latest, layer_metrics, published instead.")] = None,
    html: Annotated[Optional[Path], typer.Option(help="Also write a self-contained HTML leaderboard to DIR/index.html.")] = None,
    plots: Annotated[Optional[Path], typer.Option(help="Also write the layer-curve plots (PNG) to DIR.")] = None,
    interval: Annotated[
        IntervalStyle,
        typer.Option(help="How 95% intervals show: pm (78.5 ±0.4, the larger half), range (78.5 (78.1–78.9)) or none."),
    ] = IntervalStyle("pm"),
    depth: Annotated[
        Depth, typer.Option(help="Layer plots' x axis: block, or relative (block / depth) to set 12 and 24 blocks side by side.")
    ] = Depth("block"),
    layer: Annotated[LayerChoice, typer.Option(help="For 'compare': each side's best (val-selected) or last layer set.")] = LayerChoice(
        "best"
    ),
    cards: CardsOption = None,
) -> None:
    """Leaderboard, layer curves or one cell, from the newest record per cell, beside the paper's numbers
    (and your own reference numbers: CSV files in a --cards directory's published/ folder).

    [bold]Examples[/bold]

      aimbench report --suite aim15 --format latex > table6.tex

      aimbench report layers --backbone 'aim-*' --task imagenet-1k --plots plots/

      aimbench report cell 'aim-1b|dtd|attentive|0'

      aimbench report compare aim-600m dinov2-vitl14 -t dtd,pets

      aimbench report --sql "SELECT backbone, avg(best_test_score) FROM latest GROUP BY ALL"

      aimbench report --html site/
    """
    for option, folder in (("--html", html), ("--plots", plots)):
        if folder is not None:
            writable_folder(folder, option)
    session = open_session(results, extra_published=[root / PUBLISHED_DIR for root in card_roots(cards or ())[1:]])
    con = session.con
    if sql is not None:
        table, rows = sql_view(session, sql)
        _print([table], rows, format.value)
        return
    filters = build_filters(Registry.load(cards or ()), backbone, task, probe, suite, since)
    names = names or []
    if view is View.cell and len(names) != 1:
        raise UserError(f"name the cell: aimbench report cell 'backbone|task|probe|seed' (or a unique prefix); got {len(names)} names")
    if view is View.compare and len(names) != 2:
        raise UserError(f"name two backbones: aimbench report compare A B [-t TASKS]; got {len(names)} name(s)")
    if names and view in (View.leaderboard, View.layers):
        raise UserError(f"'aimbench report {view.value}' takes no names (got {' '.join(names)}); filter with --backbone, --task")
    if view is View.cell:
        tables, rows = cell_view(con, results, names[0])
        _print(tables, rows, format.value)
        return
    if view is View.compare:
        table, rows = compare_view(con, results, names[0], names[1], filters, layer.value, interval.value)
        _print([table], rows, format.value)
        return
    board = None
    if view is View.layers:
        table, _, points = layers_view(con, filters, interval.value)
        _print([table], points, format.value)
    else:
        board, summaries = leaderboard_view(con, filters, paper, results, interval.value)
        _print([board], summaries, format.value)
    if plots is not None or html is not None:
        from aimbench.report.curves import curves_table, layer_curves

        curves = layer_curves(con, filters)
        if plots is not None:
            from aimbench.report.plots import write_plots

            written = write_plots(curves, plots, relative=depth is Depth.relative)
            make_console().print(f"wrote {len(written)} layer-curve plots to {plots}", style="dim")
        if html is not None:
            from aimbench.report.html import write_html

            board = board or leaderboard_view(con, filters, paper, results, interval.value)[0]
            subtitle = f"{session.records} records in {results}"
            page = write_html(html, board, curves_table(curves, interval.value), curves, subtitle, relative=depth is Depth.relative)
            make_console().print(f"wrote {page}", style="dim")
    if session.other_versions:
        make_console(stderr=True).print(f"note: {session.other_versions} records of another schema version were left out", style="dim")


def export(
    results: ResultsOption = Path("results"),
    format: Annotated[ExportFormat, typer.Option("--format", "-f", help="parquet | csv.")] = ExportFormat("parquet"),
    out: Annotated[
        Optional[Path], typer.Option(help="Folder for runs, latest, layer_metrics and published files [default: RESULTS/exports].")
    ] = None,
) -> None:
    """Write the store's tables (runs, latest, layer_metrics, published) as Parquet or CSV files.

    [bold]Examples[/bold]

      aimbench export --format parquet --out /tmp/aimbench-tables
    """
    folder = out or results / "exports"
    writable_folder(folder, "--out")  # before the records are read: a bad --out fails at once
    session = open_session(results)
    written = export_tables(session.con, folder, format.value)
    make_console().print("wrote " + ", ".join(str(p) for p in written))
