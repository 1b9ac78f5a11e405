"""``aimbench report --sql``: a user's query reads the report's tables and nothing else.

DuckDB can read and write any file the user can (``COPY ... TO``, ``read_text('/etc/passwd')``,
``ATTACH``), and a query string may arrive from a script, a notebook or a shared snippet. So the
query is held to two rules, each enough on its own for the cases it covers:

* it must be one read-only statement (:func:`check_read_only`): SELECT, WITH, FROM-first,
  DESCRIBE, SHOW, SUMMARIZE, or EXPLAIN of one of them; anything else (COPY, ATTACH, CREATE,
  INSERT, DROP, SET, PRAGMA, several statements) is refused before it runs, in one line;
* it runs on a locked connection (:func:`lock_session`): after the session's views exist, external
  access is switched off and the configuration locked, so no statement reaches a file, and none
  can switch it back on.

With external access off DuckDB cannot read the Parquet cache behind the views either; the one
file it may read is a private copy of the pinned cache (a copy, not the shared hard link: even a
write that slipped past the first rule would change nothing but this session's copy). Copying the
cache of 100k records takes milliseconds, where loading it into memory takes over a second.
"""

from __future__ import annotations

import atexit
import re
import shutil
import uuid

import duckdb

from aimbench.atomic import part_path
from aimbench.errors import UserError
from aimbench.store.cache import sql_string
from aimbench.store.db import Session

READ_ONLY = "SELECT, WITH, FROM, DESCRIBE, SHOW, SUMMARIZE or EXPLAIN"
_EXPLAIN = re.compile(r"\s*EXPLAIN\s+(?:ANALY[SZ]E\s+)?(.*)", re.IGNORECASE | re.DOTALL)
_LOCKED_SETTINGS = ("autoinstall_known_extensions = false", "autoload_known_extensions = false",
                    "enable_external_access = false", "lock_configuration = true")  # fmt: skip


def _statements(query: str) -> list[duckdb.Statement]:
    try:
        return duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise UserError(f"--sql failed: {str(exc).splitlines()[0]}") from None


def check_read_only(query: str) -> None:
    """Refuse, in one line, anything but one read-only query."""
    statements = _statements(query)
    if len(statements) != 1:
        raise UserError(f"--sql takes one read-only query ({READ_ONLY}), got {len(statements)} statements")
    statement = statements[0]
    if statement.type == duckdb.StatementType.SELECT:
        return
    if statement.type == duckdb.StatementType.EXPLAIN:
        explained = _EXPLAIN.fullmatch(statement.query)
        inner = _statements(explained.group(1)) if explained else []
        if len(inner) == 1 and inner[0].type == duckdb.StatementType.SELECT:
            return
        what = f"a {inner[0].type.name} statement" if len(inner) == 1 else "this statement"
        raise UserError(f"--sql explains only read-only queries ({READ_ONLY}), not {what} (EXPLAIN ANALYZE runs it)")
    raise UserError(f"--sql runs one read-only query ({READ_ONLY}); a {statement.type.name} statement is refused")


def lock_session(session: Session) -> None:
    """Point the views at a private copy of the cache (or rows in memory), then cut off every file."""
    con, allowed = session.con, []
    locked = con.execute("SELECT current_setting('lock_configuration')").fetchone()
    assert locked is not None  # a bare SELECT yields exactly one row
    if locked[0]:
        return  # locked already (a second query of the session)
    if session.pinned is not None:
        private = part_path(session.pinned.parent / "records-sql.parquet", uuid.uuid4().hex[:8]).absolute()
        try:
            shutil.copyfile(session.pinned, private)
        except OSError:  # a folder that took a pin but not a copy (full disk): hold the rows in memory
            con.execute("CREATE TEMP TABLE records_snapshot AS SELECT * FROM all_records")
            con.execute("CREATE OR REPLACE VIEW all_records AS SELECT * FROM records_snapshot")
        else:
            atexit.register(private.unlink, missing_ok=True)
            allowed = [str(private)]
            con.execute(f"CREATE OR REPLACE VIEW all_records AS SELECT * FROM read_parquet([{sql_string(str(private))}])")
    con.execute("SET allowed_paths = $paths", {"paths": allowed})
    for setting in _LOCKED_SETTINGS:
        con.execute(f"SET {setting}")
