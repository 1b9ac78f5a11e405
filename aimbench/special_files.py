"""Refusing special files (FIFOs, sockets, devices) where aimbench reads data, lists and cards.

Opening a FIFO for reading blocks until some process writes to it, so a list file or an image
that is a FIFO nobody writes would hang an evaluation forever; a character device such as
``/dev/zero`` never ends. Every path aimbench reads as a file goes through :func:`require_regular`
first: one error naming the path and what it is, before anything opens it.
"""

from __future__ import annotations

import stat
from pathlib import Path

from aimbench.errors import UserError

_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"))  # fmt: skip


def special_kind(mode: int) -> str | None:
    """What a ``st_mode`` is when it is a special file, else None (regular files, folders)."""
    return next((kind for test, kind in _KINDS if test(mode)), None)


def require_regular(path: Path, what: str = "file") -> None:
    """Refuse ``path`` when it is a special file; a missing path is left to the reader to report."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    kind = special_kind(mode)
    if kind is not None:
        raise UserError(f"{path} is {kind}, not a regular {what}; reading it could block forever: replace it with a file")
