"""Atomic file writes: a path either does not exist or holds a complete file.

Everything aimbench writes that a later run trusts (records, cached features, training state,
exported features) goes through :func:`atomic_write`: the content is written to a hidden
``.<name>.<pid>.part`` file next to the target (never matched by the readers' patterns), fsynced, and
renamed over the target in one step. An interrupted write leaves at most the ``.part`` file,
which is removed when the interruption is an exception; a full disk, and a folder that became
unwritable (permissions changed, a file system remounted read-only mid-run), are one
:class:`NotWritable` user error each, with the previous file intact. A caller holding something
expensive to recompute (a finished cell's record) catches it and keeps its bytes with
:func:`rescue`, in a folder the message names, rather than lose them.

A writer killed outright (``kill -9``, the OOM killer, a node lost) cannot remove its ``.part``
file, and a partial checkpoint of a large model is many gigabytes. So the first write into a
folder in each process sweeps the ``.part`` files of writers that are gone
(:func:`sweep_stale_parts`): the process id in the name is not alive on this host, and the file has
not been written for :data:`STALE_PART_AGE_S`. Both, because process ids are per host: on a shared
file system the writer may be alive on another node, where the age is the only evidence, and a
live writer keeps its file's modification time fresh as it writes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import time
from collections.abc import Callable
from operator import methodcaller
from pathlib import Path
from typing import BinaryIO

from aimbench.errors import UserError

PART_SUFFIX = ".part"
# An hour without a write: far longer than any writer pauses between two writes of one file (a
# checkpoint streams continuously), short enough that a killed run's leftovers go on the next day's run.
STALE_PART_AGE_S = 3600.0
_swept: set[Path] = set()  # folders this process has swept already: one scan per folder and process
_FULL = (errno.ENOSPC, errno.EDQUOT)  # the user's to fix by freeing space
_DENIED = (errno.EACCES, errno.EPERM, errno.EROFS)  # the user's to fix by making the folder writable
RESCUE_DIR = "aimbench-rescued"  # under the system's temporary folder: where unwritable results are kept


class NotWritable(UserError):
    """A write refused by the file system (full, read-only, no permission); ``path`` is the target."""

    def __init__(self, path: Path, message: str) -> None:
        self.path = path
        super().__init__(message)


def part_path(path: Path, tag: str = "") -> Path:
    """The hidden temporary name for ``path`` in this process: ``.<name>.<pid>[-<tag>].part``."""
    return path.with_name(f".{path.name}.{os.getpid()}{'-' + tag if tag else ''}{PART_SUFFIX}")


def _writer_pid(name: str) -> int | None:
    """The process id in a ``.<name>.<pid>[-<tag>].part`` name, or None for a name of another form."""
    if not (name.startswith(".") and name.endswith(PART_SUFFIX)):
        return None
    pid = name[1 : -len(PART_SUFFIX)].rpartition(".")[2].partition("-")[0]
    return int(pid) if pid.isdigit() else None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def sweep_stale_parts(folder: Path, min_age_s: float = STALE_PART_AGE_S) -> list[Path]:
    """Remove the ``.part`` files in ``folder`` whose writer is gone; return what was removed.

    A file is removed only when its name carries a process id, no process of that id lives on this
    host, and it was last modified more than ``min_age_s`` seconds ago. Folders (``tasks
    prepare``'s staging) and names without a process id are left alone.
    """
    removed: list[Path] = []
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:  # not there yet, or unreadable: nothing to sweep
        return removed
    for entry in entries:
        pid = _writer_pid(entry.name)
        if pid is None or _alive(pid):
            continue
        with contextlib.suppress(OSError):  # renamed or removed meanwhile by its writer or another sweep
            if entry.is_file(follow_symlinks=False) and now - entry.stat(follow_symlinks=False).st_mtime > min_age_s:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def sweep_once(folder: Path) -> None:
    """:func:`sweep_stale_parts` on the first call for ``folder`` in this process, then nothing."""
    key = folder.absolute()
    if key not in _swept:
        _swept.add(key)
        sweep_stale_parts(folder)


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write`` with a binary handle on the temporary file, then move it to ``path``.

    Whatever ``write`` returns is ignored, so a bare ``handle.write`` (which returns a byte count) fits.
    """
    temporary = part_path(path)  # per process: concurrent writers of one path never collide
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep_once(path.parent)
        with temporary.open("wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):  # a read-only folder may refuse even the clean-up
            temporary.unlink(missing_ok=True)
        if exc.errno in _FULL + _DENIED:  # the user's to fix, and the previous file is untouched
            raise _refusal(path, exc) from None
        raise
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _refusal(path: Path, exc: OSError) -> NotWritable:
    kept = "the previous version is kept" if path.exists() else "nothing was written"
    if exc.errno in _FULL:
        return NotWritable(path, f"no space left on the device while writing {path} ({kept}); free space there and run again")
    reason = (exc.strerror or str(exc)).lower()
    return NotWritable(path, f"cannot write {path}: {reason} ({kept}); make {path.parent} writable and run again")


def rescue(refused: NotWritable, data: bytes, beside: dict[str, bytes] | None = None) -> UserError:
    """Keep ``data``, which could not be written to ``refused.path``, under the system's temporary
    folder, with the files that belong with it (``beside``, name -> bytes: a sidecar's record); the
    returned error says where, and how to put them in place."""
    folder = Path(tempfile.gettempdir()) / RESCUE_DIR
    kept = {refused.path.name: data, **(beside or {})}
    try:
        for name, content in kept.items():
            atomic_write(folder / name, methodcaller("write", content))
    except NotWritable:
        return refused  # nowhere to keep it either: the first refusal says what to fix
    where = folder / refused.path.name if len(kept) == 1 else f"{folder} ({', '.join(kept)})"
    return UserError(
        f"{refused}; the finished result is kept in {where}: move {'it' if len(kept) == 1 else 'them'} to {refused.path.parent}"
    )
