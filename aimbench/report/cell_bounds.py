"""What a leaderboard cell needs beside its score: its interval, and whether its recipe hit a grid's edge.

One seed: the interval its record stored (``layer_metrics`` columns, no file read), so 100k
records still report in well under 2 s. Several seeds of one setup and task: the stored
per-seed intervals cannot be combined, so the interval over seeds and test examples comes from
their per-example outputs (``aimbench.report.seed_intervals``, cached), and is labelled as such.

Grid edge: a selected learning rate at the smallest or largest value its grid tried, or a
weight decay at the largest (or at the smallest, when that is above 0: 0 is a floor, not an
edge), means the best head may lie outside the grid; the cell is marked so the grid gets widened.
The grid is the recipe's (``probe_config``); ``report cell`` checks the heads a layer set trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from aimbench.report.filters import Filters
from aimbench.report.intervals import Bounds
from aimbench.report.seed_intervals import seed_bounds
from aimbench.report.setups import Setup

# Added to the leaderboard's one aggregation over ``latest`` (each query on it re-ranks every record):
# the record-level copies of the best and last layer sets' intervals (no unnest of every layer set),
# and whether the best head's lr and wd sit at an end of the grid its recipe tried (probe_config: a
# few numbers, where the heads list may hold thousands). The lr is looked up among the base and the
# batch-scaled rates alike, each list checked at its own ends.
_LR, _WD = "(best_hparams->>'lr')::DOUBLE", "(best_hparams->>'weight_decay')::DOUBLE"
_BASE, _SCALED = "(probe_config->'learning_rates')::DOUBLE[]", "(probe_config->'scaled_learning_rates')::DOUBLE[]"
_WDS = "(probe_config->'weight_decays')::DOUBLE[]"
_ENDS = "(({value} = list_min({grid}) OR {value} = list_max({grid})) AND len(list_distinct({grid})) > 1)"
SUMMARY_COLUMNS = f"""
       any_value(best_test_interval.low) AS best_low, any_value(best_test_interval.high) AS best_high,
       any_value(last_test_interval.low) AS last_low, any_value(last_test_interval.high) AS last_high,
       bool_or(coalesce({_ENDS.format(value=_LR, grid=_BASE)} OR {_ENDS.format(value=_LR, grid=_SCALED)}, false)) AS lr_edge,
       bool_or(coalesce(({_WD} = list_max({_WDS}) OR ({_WD} = list_min({_WDS}) AND {_WD} > 0)) AND len(list_distinct({_WDS})) > 1,
                        false)) AS wd_edge"""

Key = tuple[Setup, str, str]  # setup, task, "best" | "last"


def cell_bounds(
    summaries: list[dict[str, Any]], con: duckdb.DuckDBPyConnection, results_dir: Path | None, filters: Filters = Filters()
) -> dict[Key, Bounds]:
    """The interval of each (setup, task, best|last) of the leaderboard's ``summaries``: stored for one
    seed, from the sidecars over several (only where ``results_dir`` is given and every seed has its outputs)."""
    bounds: dict[Key, Bounds] = {}
    several: set[tuple[Setup, str]] = set()
    for row in summaries:
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


def grid_edges(summaries: list[dict[str, Any]]) -> dict[tuple[Setup, str], list[str]]:
    """Per (setup, task): ``["lr"]``, ``["wd"]``, both or none: where the best head's value sits at its grid's edge."""
    edges = {}
    for row in summaries:
        hit = [name for name in ("lr", "wd") if row[f"{name}_edge"]]
        if hit:
            edges[(Setup.of(row), row["task"])] = hit
    return edges
