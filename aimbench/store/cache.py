"""A Parquet cache of the record files, so that reports over 100k records stay interactive.

Why Parquet and not a DuckDB database file: a DuckDB file held by one process for writing
refuses every other process, readers included, so a cache in one would make concurrent
reports contend for a lock. A Parquet file is written whole under a private temporary name
and renamed into place: readers never lock, two reports refreshing at once both succeed (the
later rename wins, and both caches are correct), and jobs never touch it.

The cache maps each record file, keyed by (name, mtime, size), to its parsed row. A refresh
parses only files that are new or changed since the cache was written and drops rows whose
file is gone, so the record files stay the only source of truth. DuckDB's ``read_json`` opens
files one by one (about 0.6 ms each); concatenating the new records into one newline-delimited
stream first is far faster (``benchmarks/report_scale.py`` times both).

A session pins the cache version it reads with a private hard link: DuckDB re-opens the file
for every query, and a newer cache renamed into place by a concurrent report must not mix with
the one this session checked (a record would be counted twice, or a query would see another
set of records than the previous one). Links are removed at exit; ones left by killed
processes are swept after a day.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import duckdb

from aimbench.atomic import PART_SUFFIX, part_path, sweep_once
from aimbench.errors import UserError
from aimbench.store.records import damaged_record_warning, record_file_text, record_intact
from aimbench.store.schema import RECORD_COLUMNS
from aimbench.store.scores import bad_score_warning, bad_scores

CACHE_DIR = ".cache"
PIN_SWEEP_S = 24 * 3600  # pins older than this were left by killed processes
_FILE_COLUMNS = {"file": "VARCHAR", "mtime_ns": "BIGINT", "size": "BIGINT"}
# A change of the column list is a new cache file; an old one is simply never read again.
_SIGNATURE = hashlib.sha256(json.dumps(RECORD_COLUMNS).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Listing:
    """The record files on disk: names with their modification time and size."""

    names: list[str]
    mtimes_ns: list[int]
    sizes: list[int]


@dataclass(frozen=True)
class CacheOutcome:
    """Where the rows come from and how many record files had to be parsed this time."""

    relation: str  # SQL for one row per record file: a pinned cache version, or the temp table ``merged``
    parsed: int
    reused: int
    pinned: Path | None = None  # the pinned cache file ``relation`` reads, None for ``merged``


def sql_string(text: str) -> str:
    """``text`` as a SQL string literal (for statements such as COPY that take no parameters)."""
    return "'" + text.replace("'", "''") + "'"


def cache_path(results_dir: Path) -> Path:
    return results_dir / CACHE_DIR / f"records-{_SIGNATURE}.parquet"


def list_records(folder: Path) -> Listing:
    """Every finished record file (``*.json``; hidden ``.part`` files in flight are skipped)."""
    names, mtimes, sizes = [], [], []
    with os.scandir(folder) as entries:
        for entry in entries:
            if not entry.name.endswith(".json") or entry.name.startswith("."):
                continue
            try:
                if not entry.is_file():
                    continue
                stat = entry.stat()
            except OSError as exc:  # a link that loops (ELOOP), an unreadable entry
                raise UserError(f"run record {entry.path}: {exc.strerror or exc}; remove or fix it") from None
            names.append(entry.name)
            mtimes.append(stat.st_mtime_ns)
            sizes.append(stat.st_size)
    return Listing(names, mtimes, sizes)


def _scratch_stream(folder: Path) -> IO[str]:
    """A text file for the records being parsed: hidden, ``.part``, inside the results folder's cache
    folder (never the system's shared /tmp, which may be small or another user's to read), so an
    interrupted report's leftover is swept like any other writer's. A read-only results folder
    reports from memory; only then does the stream go to the system's temporary folder."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        sweep_once(folder)
        return part_path(folder / "records.ndjson", uuid.uuid4().hex[:8]).open("x", encoding="utf-8")
    except OSError:
        return tempfile.NamedTemporaryFile("w", prefix=".records.ndjson.", suffix=PART_SUFFIX, encoding="utf-8", delete=False)


def _parse_new(con: duckdb.DuckDBPyConnection, folder: Path, files: list[tuple[str, int, int]]) -> None:
    """Parse ``files`` into the temp table ``fresh`` through one newline-delimited stream."""
    struct = "STRUCT(" + ", ".join(f'"{name}" {kind}' for name, kind in RECORD_COLUMNS.items()) + ")"
    with _scratch_stream(folder.parent / CACHE_DIR) as stream:
        longest = 0
        for name, mtime_ns, size in files:
            try:
                text = record_file_text(folder / name)
            except UserError:
                stream.close()
                os.unlink(stream.name)
                raise
            if not record_intact(text) and _is_json(text):  # whole JSON, but not as written: never counted
                print(damaged_record_warning(folder / name), file=sys.stderr, flush=True)
                continue
            bad = _bad_scores_of(text)
            if bad:  # a number that is no measurement is never ranked
                print(bad_score_warning(folder / name, bad), file=sys.stderr, flush=True)
                continue
            # JSON strings cannot hold raw newlines, so removing them keeps a document intact
            flat = text.replace("\r", "").replace("\n", "")
            longest = max(longest, len(flat))
            stream.write(f'{{"file": {json.dumps(name)}, "mtime_ns": {mtime_ns}, "size": {size}, "record": {flat}}}\n')
    try:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE fresh AS SELECT file, mtime_ns, size, record.* FROM read_json($path, "
            "format='newline_delimited', columns=$columns, maximum_object_size=$limit)",
            {"path": str(stream.name), "columns": {**_FILE_COLUMNS, "record": struct}, "limit": max(longest + 4096, 1 << 20)},
        )
    except duckdb.Error as exc:
        raise UserError(_locate_bad_record(folder, [name for name, _, _ in files], exc)) from None
    finally:
        os.unlink(stream.name)


def _bad_scores_of(text: str) -> list[str]:
    """The out-of-range scores of a record's text; none for text that is no JSON object (reported later, by file)."""
    try:
        record = json.loads(text)
    except ValueError:
        return []
    return bad_scores(record) if isinstance(record, dict) else []


def _is_json(text: str) -> bool:
    """Whether ``text`` parses: text that does not is named by :func:`_locate_bad_record` instead."""
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


def _locate_bad_record(folder: Path, names: list[str], error: duckdb.Error) -> str:
    """Name the record file behind a parse error: an atomic writer never leaves one, a hand edit may."""
    for name in names:
        try:
            json.loads((folder / name).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return f"run record {folder / name} is not valid JSON ({exc}); delete it, or re-run its cell"
    return f"a run record in {folder} does not match the record schema: {str(error).splitlines()[0]}"


def _pin(path: Path) -> Path | None:
    """A private hard link to the current cache file (an immutable version), or None without one."""
    for stale in path.parent.glob(f".{path.name}.*.pin") if path.parent.is_dir() else ():
        with contextlib.suppress(OSError):
            if time.time() - stale.stat().st_mtime > PIN_SWEEP_S:
                stale.unlink()
    pin = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.pin")
    try:
        os.link(path, pin)
    except OSError:  # no cache yet, or a file system without hard links: rebuild or report from memory
        return None
    atexit.register(pin.unlink, missing_ok=True)
    return pin


def _relation(path: Path) -> str:
    return f"read_parquet([{sql_string(str(path))}])"


def _write_cache(con: duckdb.DuckDBPyConnection, rows: str, path: Path) -> Path | None:
    """Write ``rows`` as the new cache and return a pin to it, or None where the folder is read-only."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep_once(path.parent)
        part = str(part_path(path, uuid.uuid4().hex[:8]))  # unique: one process may refresh twice
        try:
            con.execute(f"COPY ({rows}) TO {sql_string(part)} (FORMAT parquet)")
            pin = Path(f"{part.removesuffix('.part')}.pin")
            os.link(part, pin)
            try:
                os.replace(part, path)
            except OSError:
                pin.unlink()
                raise
            atexit.register(pin.unlink, missing_ok=True)
            return pin
        finally:
            Path(part).unlink(missing_ok=True)
    except (OSError, duckdb.IOException):
        return None


def refresh(con: duckdb.DuckDBPyConnection, results_dir: Path, listing: Listing) -> CacheOutcome:
    """Bring the cache in line with ``listing``; the returned relation holds one row per file."""
    path = cache_path(results_dir)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE disk AS SELECT unnest($names) AS file, unnest($mtimes) AS mtime_ns, unnest($sizes) AS size",
        {"names": listing.names, "mtimes": listing.mtimes_ns, "sizes": listing.sizes},
    )
    pin = _pin(path)
    stale, kept = list(zip(listing.names, listing.mtimes_ns, listing.sizes)), 0
    if pin is not None:
        key, cached = "(file, mtime_ns, size)", _relation(pin)
        try:
            con.execute(f"CREATE OR REPLACE TEMP TABLE cached_keys AS SELECT file, mtime_ns, size FROM {cached}")
        except duckdb.Error:  # a torn or foreign file: the cache is derived data, rebuild it
            pin = None
        else:
            stale = con.execute(f"SELECT file, mtime_ns, size FROM disk ANTI JOIN cached_keys USING {key}").fetchall()
            kept, total = con.execute(f"SELECT (SELECT count(*) FROM cached_keys SEMI JOIN disk USING {key}), "
                                      "(SELECT count(*) FROM cached_keys)").fetchall()[0]  # fmt: skip
            if not stale and kept == len(listing.names) == total:
                return CacheOutcome(cached, parsed=0, reused=kept, pinned=pin)
    if stale:
        _parse_new(con, results_dir / "runs", stale)
    rows = " UNION ALL ".join(
        ([f"SELECT * FROM {_relation(pin)} SEMI JOIN disk USING (file, mtime_ns, size)"] if pin is not None else [])
        + (["SELECT * FROM fresh"] if stale else [])
    )
    written = _write_cache(con, rows, path)
    if written is None:  # a read-only results folder: report from memory, without a cache
        con.execute(f"CREATE OR REPLACE TEMP TABLE merged AS {rows}")
        return CacheOutcome("merged", parsed=len(stale), reused=kept)
    return CacheOutcome(_relation(written), parsed=len(stale), reused=kept, pinned=written)
