"""What running an interrupted cell's command again resumes, read from what is on disk.

An interrupt message must not promise a checkpoint that does not exist. The training states of a
cell are ``<results>/state/<record stem>.pt`` (linear heads) and ``<stem>.passN.pt`` (attentive
heads, one per pass); :func:`resume_note` opens them memory-mapped (a state can be gigabytes: only
the few numbers it needs are read) and says where each resumes, or that none exists yet. Cached
features are kept per block in the feature cache whatever the stage, so they are never redone.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from aimbench.launch.cell_progress import STATE_DIR

_PASS = re.compile(r"\.pass(\d+)$")


def _saved_position(path: Path) -> dict[str, Any] | None:
    """The data position a state file holds (done, total, epoch, step), or None when it cannot be read."""
    import torch  # only once a cell was running: torch is loaded already

    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001  # torn or foreign: resume then starts that probe again, as load_state warns
        return None
    return {key: state.get(key) for key in ("done", "total", "epoch", "step")} if isinstance(state, dict) else None


def _where(position: dict[str, Any]) -> str:
    if isinstance(position["done"], int) and isinstance(position["total"], int):
        return f"step {position['done']}/{position['total']}"
    return f"epoch {position['epoch']}, step {position['step']}"


def resume_note(results: Path, stem: str, probe: str) -> str:
    """One clause for an interrupt message: what the same command resumes of the cell ``stem``
    (a ``probe`` cell), from the training states under ``<results>/state/``."""
    states = sorted((results / STATE_DIR).glob(f"{stem}.*pt"))
    positions = [(path, _saved_position(path)) for path in states if path.name == f"{stem}.pt" or _PASS.search(path.stem)]
    saved = [(path, position) for path, position in positions if position is not None]
    if probe not in ("linear", "attentive"):
        return f"{probe} probes train nothing: the same command runs the cell again, from its cached features"
    if not saved:
        return (f"no training state of its {probe} heads yet (stopped before they saved one): cached features are kept, "
                "the same command trains the heads from the start")  # fmt: skip
    if len(saved) == 1:  # linear heads, or attentive heads trained in one pass (or only the first pass saved)
        match = _PASS.search(saved[0][0].stem)
        which = f" (pass {int(match[1]) + 1})" if match and int(match[1]) else ""
        return f"{probe} heads saved at {_where(saved[0][1])}{which}: the same command resumes there"
    passes = ", ".join(f"pass {int(match[1]) + 1} at {_where(position)}" for path, position in saved if (match := _PASS.search(path.stem)))
    return f"{probe} heads saved ({passes}): the same command resumes there (a pass with no state trains from the start)"
