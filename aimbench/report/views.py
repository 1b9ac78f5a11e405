"""The report's views over one DuckDB session, independent of how they are printed.

``aimbench report`` is a thin dispatcher over these: the leaderboard (with paper rows), the
layer curves, one cell in detail, an ad-hoc SQL query, and the export of the store's tables.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import duckdb

from aimbench.atomic import part_path, sweep_once
from aimbench.errors import UserError
from aimbench.report.cell_bounds import cell_bounds, grid_edges
from aimbench.report.cell_detail import find_cell, layer_table, protocol_table, provenance_table
from aimbench.report.curves import Curve, curves_table, layer_curves
from aimbench.report.filters import Filters
from aimbench.report.intervals import Bounds
from aimbench.report.leaderboard import cell_summaries, layer_scores, leaderboard, published_rows
from aimbench.report.setups import Setup
from aimbench.report.tables import Table
from aimbench.store.cache import sql_string
from aimbench.store.db import Session
from aimbench.store.schema import TABLES
from aimbench.store.user_sql import check_read_only, lock_session

EXPORT_FORMATS = ("parquet", "csv")


def leaderboard_view(
    con: duckdb.DuckDBPyConnection, filters: Filters, paper: bool = True, results_dir: Path | None = None, style: str = "pm"
) -> tuple[Table, list[dict[str, Any]]]:
    """The pivoted leaderboard and its long form (one row per backbone, task, probe: scores, interval
    ends and n_test) for CSV; ``results_dir`` lets cells of several seeds read their sidecars."""
    summaries = cell_summaries(con, filters)
    named = {t for t in filters.tasks if not any(ch in t for ch in "*?[")}  # a suite's columns show even when unmeasured
    shown = filters.order({s["task"] for s in summaries} | named)
    papers = published_rows(con, shown, filters) if paper else []
    if not summaries and not papers:
        raise UserError(
            "no records match the filters; drop a filter, or see 'aimbench report --sql \"SELECT DISTINCT backbone, task, probe FROM runs\"'"
        )
    bounds = cell_bounds(summaries, con, results_dir, filters)
    # paper windows are looked up only for backbones a paper row is matched to: no unnest of every other record's layer sets
    matched = tuple(sorted({p.backbone for p in papers if p.backbone}))
    layers = layer_scores(con, replace(filters, backbones=matched)) if matched else None
    board = leaderboard(summaries, papers, shown, layers, bounds, grid_edges(summaries), style)
    return board, [_with_bounds(s, bounds) for s in summaries]


def _with_bounds(summary: dict[str, Any], bounds: dict[tuple[Setup, str, str], Bounds]) -> dict[str, Any]:
    """A long-form row with its intervals' ends beside each score (empty where none, seeds combined
    where several), and the grid-edge flags; the raw per-record ends it was built from are dropped."""
    out: dict[str, Any] = {}
    for key, value in summary.items():
        if key in ("best_low", "best_high", "last_low", "last_high"):
            continue
        out[key] = value
        for which in ("best", "last"):
            if key == f"{which}_test_score":
                found = bounds.get((Setup.of(summary), summary["task"], which))
                out[f"{which}_test_low"] = None if found is None else found.low
                out[f"{which}_test_high"] = None if found is None else found.high
                out[f"{which}_interval_seeds"] = None if found is None else found.seeds
    return out


def layers_view(con: duckdb.DuckDBPyConnection, filters: Filters, style: str = "pm") -> tuple[Table, list[Curve], list[dict[str, Any]]]:
    """The curves table, the curves (for plots), and one long row per point for CSV (with its interval's ends and n_test)."""
    curves = layer_curves(con, filters)
    if not curves:
        raise UserError("no per-block results match the filters (layer curves need single-block layer sets, e.g. --layers all)")
    points = [
        {"backbone": c.backbone, "weights": c.setup.weights_name, "setup": c.label, "task": c.task, "probe": c.probe, "metric": c.metric,
         "block": block, "relative_depth": None if not c.depth else (block + 1) / c.depth, "val_score": val, "test_score": test,
         "test_low": low, "test_high": high, "n_test": c.n_test, "best": c.best is not None and block in c.best.single_blocks(),
         "tied_with_best": None if (tied := c.tied_with_best()) is None else block in tied,
         "last": c.last is not None and block in c.last.single_blocks(), "seeds": c.seeds}
        for c in curves for block, val, test, low, high in zip(c.blocks, c.val, c.test, c.low, c.high)
    ]  # fmt: skip
    return curves_table(curves, style), curves, points


def cell_view(con: duckdb.DuckDBPyConnection, results_dir: Path, key: str) -> tuple[list[Table], list[dict[str, Any]]]:
    record = find_cell(con, results_dir, key)
    protocol = protocol_table(record)
    return [provenance_table(record), *([protocol] if protocol else []), layer_table(record)], record["layers"]


def sql_view(session: Session, query: str) -> tuple[Table, list[dict[str, Any]]]:
    """Run one read-only query over the views (``aimbench.store.user_sql``); every value is shown as DuckDB prints it."""
    check_read_only(query)
    lock_session(session)
    try:
        relation = session.con.sql(query)
        if relation is None:
            raise UserError("--sql takes a query that returns rows (SELECT, DESCRIBE, SUMMARIZE, ...)")
        columns = relation.columns
        rows = relation.select(*(duckdb.ColumnExpression(c).cast(duckdb.sqltype("VARCHAR")) for c in columns)).fetchall()
    except duckdb.PermissionException as exc:
        raise UserError(f"--sql reads the tables {', '.join(TABLES)}, never files: {str(exc).splitlines()[0]}") from None
    except duckdb.Error as exc:
        raise UserError(f"--sql failed: {str(exc).splitlines()[0]} (tables: {', '.join(TABLES)})") from None
    text_rows = [["" if v is None else v for v in row] for row in rows]
    return Table("query", list(columns), text_rows, [f"{len(rows)} rows"]), [dict(zip(columns, row)) for row in text_rows]


def export_tables(con: duckdb.DuckDBPyConnection, folder: Path, fmt: str) -> list[Path]:
    """Write every table of the store to ``folder/<table>.<fmt>``, each file renamed into place."""
    if fmt not in EXPORT_FORMATS:
        raise UserError(f"unknown export format '{fmt}'; choose {' or '.join(EXPORT_FORMATS)}")
    folder.mkdir(parents=True, exist_ok=True)
    sweep_once(folder)
    written = []
    for table in TABLES:
        path = folder / f"{table}.{fmt}"
        part = part_path(path)
        options = "FORMAT parquet" if fmt == "parquet" else "FORMAT csv, HEADER true"
        try:
            con.execute(f"COPY (SELECT * FROM {table}) TO {sql_string(str(part))} ({options})")
            os.replace(part, path)
        finally:
            part.unlink(missing_ok=True)
        written.append(path)
    return written
