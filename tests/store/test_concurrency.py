"""Many jobs writing records while reports run: every record appears exactly once, no lock errors."""

from __future__ import annotations

import multiprocessing
import traceback
from pathlib import Path

from aimbench.report.filters import Filters
from aimbench.report.views import leaderboard_view
from aimbench.store.db import open_session
from aimbench.store.records import record_path, write_record_atomic
from tests.store.test_db import layer, make_record

WRITERS = 16
RECORDS_EACH = 15


def write_records(results: Path, worker: int) -> None:
    """One 'job': writes its own record files, one by one, like cells finishing."""
    for i in range(RECORDS_EACH):
        record = make_record(f"bb{worker}", f"task{i}", 0, f"2026-01-01T00:00:{i:02d}+00:00", f"{worker:04d}{i:028d}",
                             [layer(0, 0.5, 0.4), layer(1, 0.6, 0.5)])  # fmt: skip
        write_record_atomic(record_path(results, f"{record['cell_key'].replace('|', '__')}__{record['config_hash']}.json"), record)


def report_until(results: Path, stop: Path, errors: multiprocessing.Queue) -> None:
    """A report loop in its own process, refreshing the shared cache alongside the others."""
    while not stop.exists():
        try:
            if (results / "runs").is_dir() and any((results / "runs").glob("*.json")):
                leaderboard_view(open_session(results).con, Filters())
        except Exception:  # any failure at all is what this test looks for
            errors.put(traceback.format_exc())
            return


def test_sixteen_writers_and_concurrent_reports(tmp_path: Path) -> None:
    results = tmp_path / "results"
    (results / "runs").mkdir(parents=True)
    context = multiprocessing.get_context("spawn")
    errors = context.Queue()
    stop = tmp_path / "stop"
    reporters = [context.Process(target=report_until, args=(results, stop, errors)) for _ in range(2)]
    writers = [context.Process(target=write_records, args=(results, w)) for w in range(WRITERS)]
    for process in reporters + writers:
        process.start()
    sessions = 0
    while any(w.is_alive() for w in writers):
        if any((results / "runs").glob("*.json")):
            leaderboard_view(open_session(results).con, Filters())  # this process reports too
            sessions += 1
    stop.touch()
    for process in writers + reporters:
        process.join(timeout=120)
    assert [w.exitcode for w in writers] == [0] * WRITERS
    assert errors.empty(), errors.get()
    assert [r.exitcode for r in reporters] == [0, 0]
    final = open_session(results)
    total = WRITERS * RECORDS_EACH
    assert final.records == total
    assert final.con.execute("SELECT count(*), count(DISTINCT record_id), count(DISTINCT file) FROM runs").fetchall() == [(total,) * 3]
    assert final.con.execute("SELECT count(*) FROM latest").fetchall() == [(total,)]
    assert open_session(results).parsed == 0  # the cache the reports left behind is complete
    assert sessions >= 1
