"""The Parquet cache: only new or changed record files are parsed, and it never outranks the files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from aimbench.errors import UserError
from aimbench.store import cache as cache_module
from aimbench.store.cache import cache_path
from aimbench.store.db import open_session
from aimbench.store.records import runs_dir
from tests.store.test_db import NEW, OLD, OTHER_SEED, OTHER_TASK, layer, make_record, save


@pytest.fixture
def results(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    for record in (NEW, OLD, OTHER_SEED):
        save(root, record)
    return root


def latest_ids(results: Path) -> list[str]:
    return [row[0] for row in open_session(results).con.execute("SELECT record_id FROM latest ORDER BY record_id").fetchall()]


def test_a_second_report_parses_nothing_and_a_new_record_parses_alone(results: Path) -> None:
    first = open_session(results)
    assert (first.records, first.parsed) == (3, 3) and cache_path(results).is_file()
    again = open_session(results)
    assert (again.records, again.parsed) == (3, 0)
    save(results, OTHER_TASK)
    grown = open_session(results)
    assert (grown.records, grown.parsed) == (4, 1)
    assert grown.con.execute("SELECT count(*) FROM runs").fetchone() == (4,)
    assert open_session(results).parsed == 0


def test_a_rewritten_record_is_parsed_again_and_a_deleted_one_disappears(results: Path) -> None:
    open_session(results)
    path = save(results, {**NEW, "best_test_score": 0.123, "wall_time_s": 99.0})  # same file name, new content
    os.utime(path, ns=(1, 1))  # even with an unusual mtime the (mtime, size) key differs
    session = open_session(results)
    assert session.parsed == 1
    assert session.con.execute("SELECT best_test_score FROM latest WHERE record_id = $id", {"id": NEW["record_id"]}).fetchone() == (0.123,)
    path.unlink()
    assert latest_ids(results) == ["a" * 32, "c" * 32]  # the older record of the cell is the latest again


def test_a_corrupt_cache_is_rebuilt_from_the_records(results: Path) -> None:
    open_session(results)
    cache_path(results).write_bytes(b"PAR1 torn write")
    session = open_session(results)
    assert session.parsed == 3
    assert latest_ids(results) == ["b" * 32, "c" * 32]


def test_an_unwritable_cache_still_reports_from_memory(results: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object) -> None:
        raise PermissionError("read-only file system")

    monkeypatch.setattr(cache_module.os, "replace", refuse)
    session = open_session(results)
    assert session.parsed == 3 and not cache_path(results).exists()
    assert [p.name for p in cache_path(results).parent.iterdir()] == []  # no temporary file left either
    assert session.con.execute("SELECT count(*) FROM latest").fetchone() == (2,)


def test_a_hand_broken_record_is_named_in_one_line(results: Path) -> None:
    broken = runs_dir(results) / "broken.json"
    broken.write_text('{"schema_version": 2, "cell_key": ', encoding="utf-8")
    with pytest.raises(UserError) as info:
        open_session(results)
    assert str(broken) in str(info.value) and "not valid JSON" in str(info.value)
    assert "\n" not in str(info.value)


def test_a_record_of_the_wrong_types_is_a_user_error(results: Path) -> None:
    bad = make_record("vit-z", "digits", 0, "2024-05-01T10:00:00+00:00", "f" * 32, [layer(0, 0.5, 0.5)])
    bad["seed"] = "zero"
    (runs_dir(results) / "bad.json").write_text(json.dumps(bad), encoding="utf-8")
    with pytest.raises(UserError) as info:
        open_session(results)
    assert "does not match the record schema" in str(info.value)


def test_records_of_another_schema_version_are_counted_and_left_out(results: Path) -> None:
    save(results, {**OTHER_TASK, "schema_version": 1})
    session = open_session(results)
    assert session.other_versions == 1
    assert session.con.execute("SELECT count(*) FROM runs WHERE backbone = 'vit-b'").fetchone() == (0,)


def test_a_session_keeps_reading_the_cache_version_it_checked(results: Path) -> None:
    first = open_session(results)  # builds the cache
    pinned = open_session(results)  # reads it as is
    assert pinned.parsed == 0
    save(results, OTHER_TASK)
    assert open_session(results).parsed == 1  # a concurrent report renames a newer cache into place
    assert pinned.con.execute("SELECT count(*) FROM runs").fetchall() == [(3,)]  # not a mix of two versions
    assert first.con.execute("SELECT count(*) FROM runs").fetchall() == [(3,)]


def test_pins_left_by_killed_processes_are_swept(results: Path) -> None:
    open_session(results)
    stale = cache_path(results).with_name(f".{cache_path(results).name}.999-dead.pin")
    stale.write_bytes(b"")
    os.utime(stale, (1, 1))
    fresh = cache_path(results).with_name(f".{cache_path(results).name}.998-live.pin")
    fresh.write_bytes(b"")
    open_session(results)
    assert not stale.exists() and fresh.exists()
