"""Special files are refused before anything opens them; regular files, folders and missing paths pass."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from aimbench.errors import UserError
from aimbench.special_files import require_regular


def test_fifos_sockets_and_devices_are_refused_naming_what_they_are(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(UserError, match=f"{tmp_path / 'pipe'} is a FIFO \\(named pipe\\), not a regular list file"):
        require_regular(tmp_path / "pipe", "list file")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(tmp_path / "sock"))
        with pytest.raises(UserError, match="is a socket"):
            require_regular(tmp_path / "sock")
    with pytest.raises(UserError, match="is a character device"):
        require_regular(Path("/dev/null"))


def test_regular_files_folders_and_missing_paths_pass(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    for path in (tmp_path / "file", tmp_path, tmp_path / "missing"):
        require_regular(path)
