"""Datasets for tasks: sources, split carving and the torch view of images."""

from __future__ import annotations

import os
from pathlib import Path

from aimbench.cards.task_card import TaskSpec
from aimbench.data.sources import LocatedSource, TaskNotReady, load_source, locate_source
from aimbench.data.splits import TaskSplits, carve_splits

DATA_ROOT_ENV = "AIMBENCH_DATA_ROOT"

__all__ = [
    "LocatedSource", "TaskNotReady", "TaskSplits",
    "default_data_root", "load_task", "require_ready",
]  # fmt: skip


def default_data_root() -> Path:
    return Path(os.environ.get(DATA_ROOT_ENV, Path.home() / ".cache" / "aimbench" / "data"))


def load_task(task: TaskSpec, data_root: Path | None = None, limit: int | None = None, val_fraction: float | None = None) -> TaskSplits:
    """Load a task's train/val/test as its card defines them (``val_fraction``: the protocol's, for a card that gives none)."""
    return carve_splits(task, load_source(task, data_root or default_data_root()), limit, val_fraction)


def require_ready(tasks: list[TaskSpec], data_root: Path | None = None) -> None:
    """Fail at once, naming every task without a local copy and how to provide it.

    ``eval`` calls this before any backbone is loaded, so a missing dataset costs a second, not a
    model load (or a Slurm queue wait) per cell.
    """
    root = data_root or default_data_root()
    problems = []
    for task in tasks:
        try:
            locate_source(task, root)
        except TaskNotReady as exc:
            problems.append(str(exc))
    if problems:
        raise TaskNotReady(" | ".join(problems) + f" (data root: {root}; see 'aimbench tasks check')")
