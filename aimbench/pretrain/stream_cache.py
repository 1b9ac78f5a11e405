"""A node-local disk cache of streamed blocks, shared by every rank and loader worker on the machine.

Streamed pre-training data arrive a block (a Parquet row group) at a time. All loader workers of
all ranks on a node read the same shuffle window at about the same time, so each block is fetched
once per node: the first process to need it takes a lock file (``O_EXCL``), fetches, and renames
the finished Arrow IPC file into place; the others wait for it. A lock left by a killed process
goes stale after ``STALE_LOCK_S`` and is taken over. Blocks are memory-mapped on read (no pickle,
no copy) and the cache is kept under its byte budget by deleting the least recently written
blocks; a block deleted under a reader that still needs it is simply fetched again.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pyarrow as pa

from aimbench.atomic import atomic_write
from aimbench.errors import UserError

STALE_LOCK_S = 600.0
SCHEMA = pa.schema([("bytes", pa.large_binary())])


class BlockCache:
    """``get(name, fetch)``: the block's encoded images (``None`` for a missing one), fetched at most once per node."""

    def __init__(self, root: Path, budget_bytes: int, keep_open: int = 32) -> None:
        self.root, self.budget, self.keep_open = root, budget_bytes, keep_open
        self._open: OrderedDict[str, pa.Array] = OrderedDict()

    def get(self, name: str, fetch: Callable[[], list[bytes | None]]) -> pa.Array:
        if name in self._open:
            self._open.move_to_end(name)
            return self._open[name]
        block = self._read_or_fetch(name, fetch)
        self._open[name] = block
        if len(self._open) > self.keep_open:
            self._open.popitem(last=False)
        return block

    def _path(self, name: str) -> Path:
        return self.root / f"{name}.arrow"

    def _read_or_fetch(self, name: str, fetch: Callable[[], list[bytes | None]]) -> pa.Array:
        path, lock = self._path(name), self.root / f"{name}.lock"
        while True:
            try:
                return pa.ipc.open_file(pa.memory_map(str(path))).read_all().column(0).combine_chunks()
            except FileNotFoundError:
                pass
            if self._take(lock):
                try:
                    table = pa.table({"bytes": pa.array(fetch(), type=pa.large_binary())}, schema=SCHEMA)
                    atomic_write(path, partial(_write_ipc, table=table))
                finally:
                    lock.unlink(missing_ok=True)
                self._evict()
            else:
                time.sleep(0.05)  # another process is fetching it

    def _take(self, lock: Path) -> bool:
        """Whether this process now owns the lock; a stale one (its owner died mid-fetch) is broken first."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return True
        except FileExistsError:
            try:
                if time.time() - lock.stat().st_mtime > STALE_LOCK_S:
                    lock.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
            return False
        except OSError as exc:
            raise UserError(f"cannot write the stream cache under {self.root}: {exc.strerror or exc}; set AIMBENCH_CACHE") from None

    def _evict(self) -> None:
        """Delete the oldest blocks until the cache is under 90 % of its budget (never the newest one)."""
        blocks = []
        for entry in os.scandir(self.root):
            if entry.name.endswith(".arrow"):
                try:
                    info = entry.stat()
                except FileNotFoundError:
                    continue
                blocks.append((info.st_mtime, info.st_size, entry.path))
        total = sum(size for _, size, _ in blocks)
        if total <= self.budget:
            return
        for _, size, path in sorted(blocks)[:-1]:
            Path(path).unlink(missing_ok=True)
            total -= size
            if total <= 0.9 * self.budget:
                return


def _write_ipc(handle: object, table: pa.Table) -> None:
    with pa.ipc.new_file(handle, table.schema) as writer:
        writer.write_table(table)
