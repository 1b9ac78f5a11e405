"""DuckDB over the record files: views, not a database that jobs write.

Jobs only ever write their own record file, so any number of them and any number of readers
run without lock contention. Each query session builds these relations:

- ``runs``: every record (one row per record file, read once per session);
- ``latest``: the newest record per ``cell_key`` (re-runs never duplicate a cell);
- ``layer_metrics``: ``latest`` unnested to one row per (cell, layer).
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from aimbench.errors import UserError
from aimbench.store.records import RECORD_GLOB, runs_dir


def connect(results_dir: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the views above over ``results_dir``'s records."""
    folder = runs_dir(results_dir)
    # an explicit file list, not a glob string: a '[' or '*' in the results path must stay literal
    files = sorted(str(path) for path in folder.glob(RECORD_GLOB))
    if not files:
        raise UserError(f"no run records in {folder}; run 'aimbench eval' (or 'aimbench demo') first")
    con = duckdb.connect(":memory:")
    con.execute(
        "CREATE TEMP TABLE runs AS SELECT * FROM read_json($files, format='auto', union_by_name=true, "
        "maximum_object_size=67108864)",
        {"files": files},
    )
    con.execute(
        "CREATE VIEW latest AS SELECT * FROM runs "
        "QUALIFY row_number() OVER (PARTITION BY cell_key ORDER BY created_at DESC, record_id) = 1"
    )
    con.execute(
        "CREATE VIEW layer_metrics AS SELECT backbone, task, probe, seed, cell_key, "
        "l.layer, l.token, l.lr, l.weight_decay, l.val_top1, l.test_top1 "
        "FROM latest, unnest(layers) AS t(l)"
    )
    return con
