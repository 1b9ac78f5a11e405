"""Atomic writes refused by the file system: one error naming the file, the previous file intact,
no ``.part`` left, and a rescued copy where the caller asks for one."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from aimbench.atomic import RESCUE_DIR, NotWritable, atomic_write, rescue


@pytest.mark.parametrize("code", [errno.EACCES, errno.EPERM, errno.EROFS])
def test_a_folder_that_refuses_the_rename_is_one_error_with_the_previous_file_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    target = tmp_path / "record.json"
    atomic_write(target, lambda handle: handle.write(b"old"))

    def refuse(src: object, dst: object) -> None:
        raise OSError(code, os.strerror(code), str(dst))

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(NotWritable, match=f"cannot write {target}: .*\\(the previous version is kept\\); make {tmp_path} writable"):
        atomic_write(target, lambda handle: handle.write(b"new"))
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]


def test_other_os_errors_stay_ordinary(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError) as raised:
        atomic_write(tmp_path / "file" / "inside.json", lambda handle: handle.write(b"x"))
    assert not isinstance(raised.value, NotWritable)


def test_rescue_keeps_the_bytes_under_the_temporary_folder_and_names_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    refused = NotWritable(tmp_path / "runs" / "cell.json", "cannot write it")
    error = rescue(refused, b"the record")
    kept = tmp_path / "tmp" / RESCUE_DIR / "cell.json"
    assert kept.read_bytes() == b"the record"
    assert str(error) == f"cannot write it; the finished result is kept in {kept}: move it to {tmp_path / 'runs'}"
