"""One DuckDB session over the results: the views of ``aimbench.store.schema``, read-only.

Jobs only ever write their own record file and reports only ever write the Parquet cache
(renamed into place), so any number of jobs and reports run at once without a lock.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb

from aimbench.errors import UserError
from aimbench.store.cache import list_records, refresh
from aimbench.store.records import runs_dir
from aimbench.store.schema import (
    INCOMPLETE_SQL,
    LATEST_SQL,
    LAYER_METRICS_SQL,
    PUBLISHED_COLUMNS,
    READABLE_VERSIONS,
    REQUIRED_COLUMNS,
    RUNS_SQL,
)

PUBLISHED_DIR = "published"


def published_dir() -> Path:
    """The shipped paper numbers: ``results/published`` of a checkout, or inside the wheel."""
    package = Path(__file__).resolve().parents[1]
    packaged = package / "_published"
    return packaged if packaged.is_dir() else package.parent / "results" / PUBLISHED_DIR


@dataclass
class Session:
    """A connection with the views in place, and what building them cost."""

    con: duckdb.DuckDBPyConnection
    records: int  # record files found
    parsed: int  # of which parsed this time (new or changed since the cache)
    other_versions: int  # records of another schema version, left out of ``runs``
    pinned: Path | None = None  # the cache file behind ``all_records`` (None: rows held in memory)


def connect(results_dir: Path, published: Path | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with ``runs``, ``latest``, ``layer_metrics`` and ``published``."""
    return open_session(results_dir, published).con


def open_session(results_dir: Path, published: Path | None = None, extra_published: Sequence[Path] = ()) -> Session:
    """``published`` replaces the shipped paper numbers; ``extra_published`` adds folders of a
    user's own reference numbers (``published/`` in a ``--cards`` directory)."""
    folder = runs_dir(results_dir)
    listing = list_records(folder) if folder.is_dir() else None
    if not listing or not listing.names:
        raise UserError(f"no run records in {folder}; run 'aimbench eval' (or 'aimbench demo') first")
    con = duckdb.connect(":memory:")
    outcome = refresh(con, results_dir, listing)
    con.execute(f"CREATE VIEW all_records AS SELECT * FROM {outcome.relation}")
    _warn_incomplete(con, folder)
    con.execute(RUNS_SQL)  # created_at in UTC without a zone: Python reads a zoned timestamp only with pytz installed
    con.execute(LATEST_SQL)
    con.execute(LAYER_METRICS_SQL)
    _create_published(con, [published or published_dir(), *extra_published])
    other = con.execute(
        f"SELECT count(*) FROM all_records WHERE schema_version NOT IN {READABLE_VERSIONS} OR schema_version IS NULL"
    ).fetchall()[0][0]
    return Session(con, records=len(listing.names), parsed=outcome.parsed, other_versions=other, pinned=outcome.pinned)


def _warn_incomplete(con: duckdb.DuckDBPyConnection, folder: Path) -> None:
    """Name each record that ``runs`` leaves out for lacking a field every report needs."""
    for (name,) in con.execute(f"SELECT file FROM all_records WHERE {INCOMPLETE_SQL} ORDER BY file").fetchall():
        print(f"warning: run record {folder / name} lacks one of {', '.join(REQUIRED_COLUMNS)}; left out: delete it, or re-run its cell",
              file=sys.stderr, flush=True)  # fmt: skip


def _create_published(con: duckdb.DuckDBPyConnection, folders: Sequence[Path]) -> None:
    files = [str(path) for folder in folders if folder.is_dir() for path in sorted(folder.glob("*.csv"))]
    if not files:
        columns = ", ".join(
            f"NULL::{kind} AS {name}" for name, kind in PUBLISHED_COLUMNS.items() if name not in ("score_percent", "backbone")
        )
        con.execute(
            f"CREATE VIEW published AS SELECT {columns}, '' AS backbone, NULL::DOUBLE AS score, NULL::BIGINT AS position WHERE false"
        )
        return
    try:
        con.execute(
            "CREATE TEMP TABLE published_rows AS SELECT *, row_number() OVER () AS position "
            "FROM read_csv($files, header=true, columns=$columns)",
            {"files": files, "columns": PUBLISHED_COLUMNS},
        )
    except duckdb.Error as exc:
        where = ", ".join(str(folder) for folder in folders)
        raise UserError(f"published numbers in {where} cannot be read: {str(exc).splitlines()[0]}") from None
    con.execute(
        "CREATE VIEW published AS SELECT * EXCLUDE (score_percent, backbone, position), coalesce(backbone, '') AS backbone, "
        "score_percent / 100 AS score, position FROM published_rows"
    )
