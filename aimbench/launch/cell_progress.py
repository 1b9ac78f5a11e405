"""Where a running cell says how far it is, so ``aimbench jobs`` can show it from any shell.

A cell on Slurm reports through :class:`ProgressFile`, the ``StageCallback`` that ``run_cell``
calls for each stage (features of a split, heads' epochs or steps): it keeps
``<results>/state/<record stem>.progress.json`` current (stage, done, total), rewritten atomically
at most every ``interval`` seconds and at each new stage, and removed once the record exists. A
requeued cell keeps writing the same file, so the column never goes blank across a preemption.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from aimbench.atomic import atomic_write

STATE_DIR = "state"  # <results>/state/<record stem>.*: resume state and progress of unfinished cells


def progress_path(results: Path, record_name: str) -> Path:
    return results / STATE_DIR / f"{Path(record_name).stem}.progress.json"


class ProgressFile:
    """A ``run_cell`` stage callback writing ``{"stage", "done", "total", "updated"}`` to ``path``."""

    def __init__(self, path: Path, interval: float = 2.0) -> None:
        self.path, self.interval = path, interval
        self._written = 0.0

    def _write(self, stage: str, done: int, total: int, force: bool) -> None:
        now = time.time()
        if not force and now - self._written < self.interval and done < total:
            return
        text = json.dumps({"stage": stage, "done": done, "total": total, "updated": round(now, 1)})
        atomic_write(self.path, lambda handle: handle.write(text.encode("utf-8")))
        self._written = now

    def __call__(self, stage: str, total: int) -> Callable[[int], None]:
        stage = stage.rsplit(" · ", 1)[-1]  # "backbone · task · features train": the jobs table names the cell already
        done = [0]
        self._write(stage, 0, total, force=True)

        def advance(units: int) -> None:
            done[0] += units
            self._write(stage, done[0], total, force=False)

        return advance


def read_progress(path: Path) -> str:
    """``"features train 640/1347 (48%)"``; empty when there is no readable progress file."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        done, total = int(state["done"]), int(state["total"])
        return f"{state['stage']} {done}/{total} ({100 * done // max(total, 1)}%)"
    except (OSError, ValueError, KeyError, TypeError):
        return ""
