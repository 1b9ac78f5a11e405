"""Where a running cell says how far it is, so ``aimbench jobs`` can show it from any shell, and
what a log shows of it.

A cell on Slurm reports through :class:`ProgressFile`, the ``StageCallback`` that ``run_cell``
calls for each stage (features of a split, heads' epochs or steps): it keeps
``<results>/state/<record stem>.progress.json`` current (stage, done, total), rewritten atomically
at most every ``interval`` seconds and at each new stage, and removed once the record exists. A
requeued cell keeps writing the same file, so the column never goes blank across a preemption.

Output that is not a terminal (a Slurm job's log, ``eval ... | tee``) gets plain lines instead of
bars, from :class:`PlainProgress`: ``[backbone · task] features train 120/300 (40%) 3.1 s`` at most
every ``$AIMBENCH_PROGRESS_SECONDS`` (30 s) per stage and at each stage's end. The job's
:class:`ProgressFile` prints them to its stdout; a local run's display prints them when its console
is not a terminal.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from aimbench.atomic import atomic_write
from aimbench.errors import UserError

STATE_DIR = "state"  # <results>/state/<record stem>.*: resume state and progress of unfinished cells
PROGRESS_SECONDS_ENV = "AIMBENCH_PROGRESS_SECONDS"
DEFAULT_PROGRESS_SECONDS = 30.0


def progress_path(results: Path, record_name: str) -> Path:
    return results / STATE_DIR / f"{Path(record_name).stem}.progress.json"


def _fraction(done: int, total: int) -> str:
    return f"{done}/{total} ({100 * done // max(total, 1)}%)"


def progress_line(description: str, done: int, total: int, seconds: float) -> str:
    """``[micro-cls · digits] features train 120/300 (40%) 3.1 s``: a stage's description (its
    last `` · `` part; what comes before it names the cell), how far it is, and its seconds so far."""
    cell, _, stage = description.rpartition(" · ")
    return f"{f'[{cell}] ' if cell else ''}{stage} {_fraction(done, total)} {seconds:.1f} s"


def progress_seconds() -> float:
    """Seconds between two plain progress lines of a stage: ``$AIMBENCH_PROGRESS_SECONDS``, else 30 (0: every update)."""
    text = os.environ.get(PROGRESS_SECONDS_ENV, "").strip()
    if not text:
        return DEFAULT_PROGRESS_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise UserError(f"${PROGRESS_SECONDS_ENV} is '{text}': give the seconds between two progress lines (0 or more)")
    return seconds


def _print_line(line: str) -> None:
    print(line, file=sys.stdout, flush=True)


class PlainProgress:
    """A stage callback printing :func:`progress_line` through ``write`` (stdout by default) at most
    every ``interval`` seconds per stage (default :func:`progress_seconds`) and when a stage ends."""

    def __init__(self, write: Callable[[str], None] = _print_line, interval: float | None = None) -> None:
        self.write = write
        self.interval = progress_seconds() if interval is None else interval

    def __call__(self, description: str, total: int) -> Callable[[int], None]:
        started = time.monotonic()
        done, shown = 0, started

        def advance(units: int) -> None:
            nonlocal done, shown
            done += units
            now = time.monotonic()
            if done >= total or now - shown >= self.interval:
                self.write(progress_line(description, done, total, now - started))
                shown = now

        return advance


class ProgressFile:
    """A ``run_cell`` stage callback writing ``{"stage", "done", "total", "updated"}`` to ``path``,
    and plain lines to the job's stdout through ``echo`` (None: none)."""

    def __init__(self, path: Path, interval: float = 2.0, echo: PlainProgress | None = None) -> None:
        self.path, self.interval = path, interval
        self.echo = echo
        self._written = 0.0

    def _write(self, stage: str, done: int, total: int, force: bool) -> None:
        now = time.time()
        if not force and now - self._written < self.interval and done < total:
            return
        text = json.dumps({"stage": stage, "done": done, "total": total, "updated": round(now, 1)})
        atomic_write(self.path, lambda handle: handle.write(text.encode("utf-8")))
        self._written = now

    def __call__(self, description: str, total: int) -> Callable[[int], None]:
        stage = description.rsplit(" · ", 1)[-1]  # "backbone · task · features train": the jobs table names the cell already
        done = [0]
        self._write(stage, 0, total, force=True)
        echo = self.echo(description, total) if self.echo is not None else None

        def advance(units: int) -> None:
            done[0] += units
            self._write(stage, done[0], total, force=False)
            if echo is not None:
                echo(units)

        return advance


def read_progress(path: Path) -> str:
    """``"features train 640/1347 (48%)"``; empty when there is no readable progress file."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        return f"{state['stage']} {_fraction(int(state['done']), int(state['total']))}"
    except (OSError, ValueError, KeyError, TypeError):
        return ""
