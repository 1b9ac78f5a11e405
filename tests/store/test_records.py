"""Run records: atomic writes that leave either the whole record or nothing."""

from __future__ import annotations

import json
import os
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from aimbench import atomic
from aimbench.errors import UserError
from aimbench.store.cache import list_records
from aimbench.store.records import (
    SCHEMA_VERSION,
    finished,
    new_record_header,
    read_record,
    record_intact,
    record_path,
    record_text,
    runs_dir,
    write_record_atomic,
)


def sample_record(**extra) -> dict:
    record = {
        **new_record_header("tiny|digits|linear|0", "cafe1234"),
        "backbone": "tiny",
        "task": "digits",
        "probe": "linear",
        "seed": 0,
        "best_test_score": 0.875,
        "layers": [
            {"layer_set": str(i), "token": "cls", "hparams": {"lr": 0.1}, "val_score": 0.5 + i / 10, "test_score": 0.4} for i in range(3)
        ],
        "note": "ünïcode ✓",
    }
    record.update(extra)
    return record


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_paths_and_header() -> None:
    results = Path("/somewhere/results")
    assert runs_dir(results) == results / "runs"
    assert record_path(results, "a__b.json") == results / "runs" / "a__b.json"
    header = new_record_header("bb|task|linear|3", "abc")
    assert header["schema_version"] == SCHEMA_VERSION == 5
    assert header["cell_key"] == "bb|task|linear|3" and header["config_hash"] == "abc"
    assert uuid.UUID(hex=header["record_id"]).version == 4
    assert header["record_id"] != new_record_header("x", "y")["record_id"]
    created = datetime.fromisoformat(header["created_at"])
    assert created.utcoffset() == timedelta(0)
    assert abs(datetime.now(timezone.utc) - created) < timedelta(minutes=1)


def test_write_then_read_round_trips(tmp_path: Path) -> None:
    path = record_path(tmp_path / "results", "tiny|digits|linear|0__cafe1234.json")
    record = sample_record()
    write_record_atomic(path, record)  # creates runs/ on the way
    assert read_record(path) == record
    assert json.loads(path.read_text(encoding="utf-8")) == {
        **record,
        "record_sha256": json.loads(path.read_text(encoding="utf-8"))["record_sha256"],
    }
    assert path.read_text(encoding="utf-8").endswith("}\n")
    assert listing(path.parent) == [path.name]


def test_rewrite_replaces_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "cell.json"
    write_record_atomic(path, sample_record(padding="x" * 5000))
    smaller = {"cell_key": "c", "value": 1}
    write_record_atomic(path, smaller)
    assert read_record(path) == smaller
    assert listing(path.parent) == ["cell.json"]


def test_while_writing_only_a_hidden_part_file_exists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "runs" / "cell.json"
    record = sample_record()
    seen = {}
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        folder = path.parent
        seen["names"] = listing(folder)
        seen["matching"] = list_records(folder).names
        seen["part"] = json.loads((folder / f".cell.json.{os.getpid()}.part").read_text(encoding="utf-8"))
        real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", spy)  # records are written through aimbench.atomic
    write_record_atomic(path, record)
    assert seen["names"] == [f".cell.json.{os.getpid()}.part"]
    assert seen["matching"] == []  # the report's listing never sees a record being written
    assert seen["part"] == {**record, "record_sha256": seen["part"]["record_sha256"]}  # flushed before fsync and rename
    assert listing(path.parent) == ["cell.json"]


def test_unserialisable_record_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "cell.json"
    record = sample_record(bad=object())  # json fails after part of the record was written
    with pytest.raises(TypeError):
        write_record_atomic(path, record)
    assert listing(path.parent) == []


def test_failed_rewrite_keeps_the_previous_record(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "cell.json"
    old = sample_record()
    write_record_atomic(path, old)
    with pytest.raises(TypeError):
        write_record_atomic(path, sample_record(bad={1, 2}))
    assert read_record(path) == old
    assert listing(path.parent) == ["cell.json"]


def test_failing_rename_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "runs" / "cell.json"

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", broken_replace)
    with pytest.raises(UserError, match="no space left on the device while writing .*cell.json \\(nothing was written\\)"):
        write_record_atomic(path, sample_record())
    assert listing(path.parent) == []


@pytest.mark.parametrize("where", ["write", "fsync"])
def test_keyboard_interrupt_mid_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    path = tmp_path / "runs" / "cell.json"

    def interrupted_write(handle):  # type: ignore[no-untyped-def]
        handle.write(b'{"cell_key": "half a rec')
        handle.flush()
        raise KeyboardInterrupt

    def interrupted_fsync(fd):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        if where == "write":
            atomic.atomic_write(path, interrupted_write)
        else:
            monkeypatch.setattr(atomic.os, "fsync", interrupted_fsync)
            write_record_atomic(path, sample_record())
    assert listing(path.parent) == []


def test_a_record_changed_after_it_was_written_is_refused_and_its_cell_runs_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = record_path(tmp_path, "tiny|digits|linear|0__cafe1234.json")
    write_record_atomic(path, sample_record())
    text = path.read_text(encoding="utf-8")
    assert json.loads(text)["record_sha256"] and finished(path)
    path.write_text(text.replace('"best_test_score": 0.875', '"best_test_score": 0.975'), encoding="utf-8")  # valid JSON, other number
    with pytest.raises(UserError, match="failed its checksum"):
        read_record(path)
    assert not finished(path)
    assert "failed its checksum" in capsys.readouterr().err
    assert not finished(tmp_path / "runs" / "absent.json")


@pytest.mark.parametrize(
    ("text", "intact"),
    [
        (json.dumps({"schema_version": 3, "cell_key": "c"}, indent=1), True),  # written before records were sealed
        (json.dumps({"schema_version": 4, "cell_key": "c"}, indent=1), False),  # claims a sealed version, has no seal
        (record_text({"schema_version": 4, "cell_key": "c"}), True),
        (record_text({"schema_version": 4, "cell_key": "c"}).replace('"c"', '"d"'), False),
        (record_text({"schema_version": 4, "cell_key": "c"})[:-20], False),
    ],
)
def test_record_intact_reads_the_seal_from_the_text(text: str, intact: bool) -> None:
    assert record_intact(text) is intact
