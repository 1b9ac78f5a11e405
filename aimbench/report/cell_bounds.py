"""What a leaderboard cell needs beside its score: its interval, and whether its recipe hit a grid's edge.

One seed: the interval its record stored (``layer_metrics`` columns, no file read), so 100k
records still report in well under 2 s. Several seeds of one setup and task: the stored
per-seed intervals cannot be combined, so the interval over seeds and test examples comes from
their per-example outputs (``aimbench.report.seed_intervals``, cached), and is labelled as such.

Grid edge: a selected learning rate at the smallest or largest value its grid tried, or a
weight decay at the largest (or at the smallest, when that is above 0: 0 is a floor, not an
edge), means the best head may lie outside the grid; the cell is marked so the grid gets widened.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from aimbench.report.filters import Filters
from aimbench.report.intervals import Bounds
from aimbench.report.seed_intervals import seed_bounds
from aimbench.report.setups import Setup, setup_sql

# The record-level copies of the best and last layer sets' intervals: no unnest of every layer set.
INTERVALS_SQL = """
SELECT {setup}, task, count(*) AS seeds,
       any_value(best_test_interval.low) AS best_low, any_value(best_test_interval.high) AS best_high,
       any_value(last_test_interval.low) AS last_low, any_value(last_test_interval.high) AS last_high
FROM latest
WHERE {where}
GROUP BY {setup}, task
"""

# Per record: which of the best head's lr and wd sit at the edge of the values its heads tried.
_GRID = "json_extract(heads, '$[*].hparams.{name}')::DOUBLE[]"
EDGES_SQL = f"""
SELECT {{setup}}, task, bool_or(lr IN (list_min(lrs), list_max(lrs)) AND len(list_distinct(lrs)) > 1) AS lr_edge,
       bool_or((wd = list_max(wds) OR (wd = list_min(wds) AND wd > 0)) AND len(list_distinct(wds)) > 1) AS wd_edge
FROM (SELECT *, (best_hparams->>'lr')::DOUBLE AS lr, (best_hparams->>'weight_decay')::DOUBLE AS wd,
             {_GRID.format(name="lr")} AS lrs, {_GRID.format(name="weight_decay")} AS wds FROM latest WHERE {{where}})
GROUP BY {{setup}}, task
"""

Key = tuple[Setup, str, str]  # setup, task, "best" | "last"


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    cursor = con.execute(sql, params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, values)) for values in cursor.fetchall()]


def cell_bounds(con: duckdb.DuckDBPyConnection, results_dir: Path | None, filters: Filters = Filters()) -> dict[Key, Bounds]:
    """The interval of each (setup, task, best|last): stored for one seed, from the sidecars over several
    (only where ``results_dir`` is given and every seed has its outputs)."""
    where, params = filters.where()
    bounds: dict[Key, Bounds] = {}
    several: set[tuple[Setup, str]] = set()
    for row in _rows(con, INTERVALS_SQL.format(setup=setup_sql(), where=where), params):
        setup, task = Setup.of(row), row["task"]
        if row["seeds"] > 1:
            several.add((setup, task))
            continue
        for which in ("best", "last"):
            if row[f"{which}_low"] is not None and row[f"{which}_high"] is not None:
                bounds[(setup, task, which)] = Bounds(row[f"{which}_low"], row[f"{which}_high"])
    if several and results_dir is not None:
        bounds.update(seed_bounds(con, results_dir, filters, several))
    return bounds


def grid_edges(con: duckdb.DuckDBPyConnection, filters: Filters = Filters()) -> dict[tuple[Setup, str], list[str]]:
    """Per (setup, task): ``["lr"]``, ``["wd"]``, both or none: where the best head's value sits at its grid's edge."""
    where, params = filters.where()
    edges = {}
    for row in _rows(con, EDGES_SQL.format(setup=setup_sql(), where=where), params):
        hit = [name for name in ("lr", "wd") if row[f"{name}_edge"]]
        if hit:
            edges[(Setup.of(row), row["task"])] = hit
    return edges
