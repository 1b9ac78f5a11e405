"""What a leaderboard cell needs beside its score: its interval, and whether its recipe hit a grid's edge.

One seed: the interval its record stored (``layer_metrics`` columns, no file read), so 100k
records still report in well under 2 s. Several seeds of one setup and task: the stored
per-seed intervals cannot be combined, so the interval is recomputed from the seeds'
per-example outputs (the prediction sidecars), resampling seeds and test examples together
(``aimbench.stats.intervals.score_interval`` with an (S, N) array), and labelled as such. Seeds
vary the head's initialisation and data order only, never the split, so every seed scores the
same test examples. A seed without its sidecar makes the combined interval unavailable.

Grid edge: a selected learning rate at the smallest or largest value its grid tried, or a
weight decay at the largest (or at the smallest, when that is above 0: 0 is a floor, not an
edge), means the best head may lie outside the grid; the cell is marked so the grid gets widened.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from aimbench.report.filters import Filters
from aimbench.report.intervals import Bounds, interval_sql
from aimbench.report.setups import Setup, setup_sql
from aimbench.store.records import read_record, runs_dir

INTERVALS_SQL = """
SELECT {setup}, task, count(*) FILTER (WHERE is_best) AS seeds,
       any_value({low}) FILTER (WHERE is_best) AS best_low, any_value({high}) FILTER (WHERE is_best) AS best_high,
       any_value({low}) FILTER (WHERE is_last) AS last_low, any_value({high}) FILTER (WHERE is_last) AS last_high
FROM layer_metrics
WHERE (is_best OR is_last) AND {where}
GROUP BY {setup}, task
"""

SEEDS_SQL = """
SELECT {setup}, task, file, seed, best_layer_set, last_layer_set
FROM latest
WHERE {where}
ORDER BY seed
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
    low, high = interval_sql(con)
    bounds: dict[Key, Bounds] = {}
    several: set[tuple[Setup, str]] = set()
    for row in _rows(con, INTERVALS_SQL.format(setup=setup_sql(), where=where, low=low, high=high), params):
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


def seed_bounds(con: duckdb.DuckDBPyConnection, results_dir: Path, filters: Filters, cells: set[tuple[Setup, str]]) -> dict[Key, Bounds]:
    """Seed-combined intervals from the sidecars of the cells named, each seed at its own chosen layer set."""
    where, params = filters.where()
    seeds: dict[tuple[Setup, str], list[dict[str, Any]]] = defaultdict(list)
    for row in _rows(con, SEEDS_SQL.format(setup=setup_sql(), where=where), params):
        if (Setup.of(row), row["task"]) in cells:
            seeds[(Setup.of(row), row["task"])].append(row)
    out: dict[Key, Bounds] = {}
    for (setup, task), members in seeds.items():
        loaded = [load_outputs(runs_dir(results_dir) / m["file"]) for m in members]
        if any(item is None for item in loaded):
            continue
        for which in ("best", "last"):
            combined = _combined(loaded, [m[f"{which}_layer_set"] for m in members])
            if combined is not None:
                out[(setup, task, which)] = combined
    return out


Outputs = tuple[dict[str, Any], Any]  # a record and its aimbench.store.predictions.Predictions


def load_outputs(path: Path) -> Outputs | None:
    """A record and its per-example outputs, or None where it has none (written before they were kept)."""
    record = read_record(path)
    if not record.get("predictions"):
        return None
    from aimbench.store.predictions import read_predictions  # read only where a report needs examples, not scores

    predictions = read_predictions(record, path)
    return None if predictions is None else (record, predictions)


def _combined(loaded: list[Outputs], layer_sets: list[str]) -> Bounds | None:
    """One interval over all seeds: predictions stacked (S, N) on the examples every seed scored."""
    from aimbench.stats.intervals import score_interval

    common = set.intersection(*(set(p.example_ids.tolist()) for _, p in loaded))
    stacked, labels = [], None
    for (_, predictions), layer_set in zip(loaded, layer_sets):
        if layer_set not in predictions.by_layer_set:
            return None
        keep = np.isin(predictions.example_ids, list(common))
        order = np.argsort(predictions.example_ids[keep], kind="stable")
        stacked.append(np.asarray(predictions.by_layer_set[layer_set])[keep][order])
        labels = np.asarray(predictions.labels)[keep][order]
    record = loaded[0][0]
    num_classes = int((record.get("task_info") or {}).get("num_classes") or (int(labels.max()) + 1))
    interval = score_interval(np.stack(stacked), labels, record["metric"], num_classes)
    return Bounds(interval.low, interval.high, seeds=len(stacked))


def grid_edges(con: duckdb.DuckDBPyConnection, filters: Filters = Filters()) -> dict[tuple[Setup, str], list[str]]:
    """Per (setup, task): ``["lr"]``, ``["wd"]``, both or none: where the best head's value sits at its grid's edge."""
    where, params = filters.where()
    edges = {}
    for row in _rows(con, EDGES_SQL.format(setup=setup_sql(), where=where), params):
        hit = [name for name in ("lr", "wd") if row[f"{name}_edge"]]
        if hit:
            edges[(Setup.of(row), row["task"])] = hit
    return edges
