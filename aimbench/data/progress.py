"""Byte progress of a download: what the downloader calls, and plain periodic lines for a log.

A full ``tasks prepare all`` streams ~260 GB, single files for hours (iNaturalist's 120 GB); a user
at a terminal wants bytes, rate and time left, and a Slurm or CI log wants the same as a line every
so often, not a bar redrawn thousands of times. Both speak :class:`ByteMeter`, which the downloader
calls (the terminal's bar is the CLI's, ``aimbench.cli.download_bar``); the clock of :class:`PlainMeter` is injectable so that its lines are tested without waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

PLAIN_EVERY_S = 30.0  # a log line every 30 s: a 120 GB file at 10 MB/s writes ~400 lines, each still news


class ByteMeter(Protocol):
    """Told about one transfer at a time: its start (``done`` bytes already held, when resuming),
    each chunk received, and its end (complete or not)."""

    def start(self, name: str, total: int | None, done: int) -> None: ...

    def advance(self, amount: int) -> None: ...

    def finish(self) -> None: ...


class SilentMeter:
    """For library callers and tests that want no output."""

    def start(self, name: str, total: int | None, done: int) -> None:
        pass

    def advance(self, amount: int) -> None:
        pass

    def finish(self) -> None:
        pass


def human_bytes(amount: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if amount < 1000:
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1000
    return f"{amount:.1f} TB"


def human_duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


class PlainMeter:
    """One line at most every ``every_s`` seconds, and one when a transfer ends: for logs.

    The rate is over this transfer only (bytes resumed from an earlier run are not counted as
    received now), and the time left is the remaining bytes at that rate.
    """

    def __init__(self, write: Callable[[str], None], every_s: float = PLAIN_EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.write, self.every_s, self.clock = write, every_s, clock
        self.name, self.done, self.received = "", 0, 0
        self.total: int | None = None
        self.started = self.last = 0.0

    def start(self, name: str, total: int | None, done: int) -> None:
        self.name, self.total, self.done, self.received = name, total, done, 0
        self.started = self.last = self.clock()
        resumed = f", resuming at {human_bytes(done)}" if done else ""
        self.write(f"{name}: {human_bytes(total) if total is not None else 'size unknown'} to download{resumed}")

    def advance(self, amount: int) -> None:
        self.done += amount
        self.received += amount
        now = self.clock()
        if now - self.last >= self.every_s:
            self.last = now
            self.write(self.line(now))

    def line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = self.received / elapsed
        if self.total is None:
            return f"{self.name}: {human_bytes(self.done)}, {human_bytes(rate)}/s"
        share = f"{100 * self.done / self.total:.0f}%" if self.total else "100%"
        left = f", {human_duration((self.total - self.done) / rate)} left" if rate > 0 else ""
        return f"{self.name}: {human_bytes(self.done)} of {human_bytes(self.total)} ({share}), {human_bytes(rate)}/s{left}"

    def finish(self) -> None:
        self.write(self.line(self.clock()))
