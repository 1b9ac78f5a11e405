"""How cells run (folders, device, batch sizes): none of it changes a number, so none of it is in a cell's identity.

Kept apart from :mod:`aimbench.launch.run_cell` so the CLI can build and validate the options
without importing torch: a bad argument fails in a fraction of a second, before any model loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunOptions:
    """How to run cells; none of this changes a cell's numbers, so none of it is in its identity."""

    results_dir: Path
    data_root: Path | None = None
    card_dirs: tuple[Path, ...] = ()
    device: str = "auto"
    batch_size: int = 64
    workers: int = 0
    cache_dir: Path | None = None  # feature cache root; default $AIMBENCH_CACHE or ~/.cache/aimbench
    memory_gb: float | None = None  # attentive heads' device memory budget; default: 90 % of free GPU memory
    checkpoint_every: int = 200  # optimizer steps between resumable training checkpoints
    progress_file: bool = False  # report stages to <results>/state/<record stem>.progress.json (for 'aimbench jobs')
