"""DuckDB over the record files: views, not a database that jobs write.

Jobs only ever write their own record file, so any number of them and any number of readers
run without lock contention. Each query session builds these relations:

- ``runs``: every record of the current schema version (one row per record file, read once
  per session; records of older versions are left out, re-run their cells to include them);
- ``latest``: the newest record per ``cell_key`` (re-runs never duplicate a cell);
- ``layer_metrics``: ``latest`` unnested to one row per (cell, layer set).
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from aimbench.errors import UserError
from aimbench.store.records import RECORD_GLOB, SCHEMA_VERSION, runs_dir


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
        "maximum_object_size=67108864) WHERE schema_version = $version",
        {"files": files, "version": SCHEMA_VERSION},
    )
    con.execute(
        "CREATE VIEW latest AS SELECT * FROM runs "
        "QUALIFY row_number() OVER (PARTITION BY cell_key ORDER BY created_at DESC, record_id) = 1"
    )
    con.execute(
        "CREATE VIEW layer_metrics AS SELECT backbone, task, probe, seed, cell_key, "
        "metric, l.layer_set, l.blocks, l.layer, l.token, l.hparams, l.val_score, l.test_score "
        "FROM latest, unnest(layers) AS t(l)"
    )
    return con
