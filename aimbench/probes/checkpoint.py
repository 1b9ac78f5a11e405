"""Resumable probe training state: written atomically, read without executing pickled code.

A state file holds the heads, optimizer and schedule state, and the data position (epoch, step
within the epoch). It is written to a hidden ``.part`` file, fsynced and renamed, so a job killed
mid-write leaves the previous state intact. The state carries the identity of the run it belongs
to; a state from another configuration is ignored, never half-applied.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from aimbench.atomic import atomic_write


def save_state(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda handle: torch.save(state, handle))


def load_state(path: Path | None, identity: str) -> dict[str, Any] | None:
    """The saved state of the run ``identity``, or None (no file, another run's, or damaged)."""
    if path is None or not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError, ValueError):
        return None
    return state if isinstance(state, dict) and state.get("identity") == identity else None


def drop_state(path: Path | None) -> None:
    if path is not None:
        path.unlink(missing_ok=True)
