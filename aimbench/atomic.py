"""Atomic file writes: a path either does not exist or holds a complete file.

Everything aimbench writes that a later run trusts (records, cached features, training state,
exported features) goes through :func:`atomic_write`: the content is written to a hidden
``.<name>.<pid>.part`` file next to the target (never matched by the readers' patterns), fsynced, and
renamed over the target in one step. An interrupted write leaves at most the ``.part`` file,
which is removed when the interruption is an exception.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write`` with a binary handle on the temporary file, then move it to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.part")  # per process: concurrent writers of one path never collide
    try:
        with temporary.open("wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
