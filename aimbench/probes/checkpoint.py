"""Resumable probe training state: written atomically, read without executing pickled code.

A state file holds the heads, optimizer and schedule state, and the data position (epoch, step
within the epoch). It is written to a hidden ``.part`` file, fsynced and renamed, so a job killed
mid-write leaves the previous state intact. The state carries the identity of the run it belongs
to; a state from another configuration is ignored, never half-applied. It also carries the
checksum of its content: a state damaged after it was written (one flipped value would change one
head) is never resumed; training starts again from the beginning, with a one-line warning, and
ends with the numbers an uninterrupted run gives.
"""

from __future__ import annotations

import pickle
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from aimbench.atomic import atomic_write
from aimbench.checksum import seal, unseal


def save_state(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda handle: torch.save(seal(state), handle))


def load_state(path: Path | None, identity: str) -> dict[str, Any] | None:
    """The saved state of the run ``identity``, or None (no file, another run's, or damaged: then with a warning)."""
    if path is None or not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError, ValueError):
        saved = None
    state = unseal(saved) if isinstance(saved, dict) else None
    if state is None:
        print(
            f"warning: training state {path} cannot be read or failed its checksum (damaged after it was written); "
            "training this probe again from the start",
            file=sys.stderr,
            flush=True,
        )
        return None
    return state if state.get("identity") == identity else None


@dataclass(frozen=True)
class Checkpointing:
    """Where a training run keeps its resumable state, whose run it is, and how often it saves:
    every ``every`` optimizer steps, wherever that falls (a resumed run continues mid-epoch, on the
    same batches). Not at each epoch's end: with small splits an epoch is a step or two, and
    saving every head's state that often costs more than training them. How often is not part of a
    cell's identity: it never changes the numbers."""

    path: Path
    identity: str
    every: int = 200
    min_seconds: float = 0.0  # and at least this long after the previous save (a large grid's state is gigabytes)
    _saved_at: list[float] = field(default_factory=list, repr=False, compare=False)

    def load(self) -> dict[str, Any] | None:
        """The saved state of this run, if any; says so on stderr, so a log shows where a requeued job resumed."""
        state = load_state(self.path, self.identity)
        if state is not None:
            print(f"resuming {self.path.name} at epoch {state.get('epoch')}, step {state.get('step')}", file=sys.stderr, flush=True)
        return state

    def save(self, state: dict[str, Any]) -> None:
        save_state(self.path, {**state, "identity": self.identity})
        self._saved_at[:] = [time.monotonic()]

    def due(self, steps_done: int) -> bool:
        """At every ``every``-th step, unless the previous save is younger than ``min_seconds`` (the first always saves)."""
        if steps_done % self.every:
            return False
        return not self._saved_at or time.monotonic() - self._saved_at[0] >= self.min_seconds
