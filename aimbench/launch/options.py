"""How cells run (folders, device, batch sizes): none of it changes a number, so none of it is in a cell's identity.

Kept apart from :mod:`aimbench.launch.run_cell` so the CLI can build and validate the options
without importing torch: a bad argument fails in a fraction of a second, before any model loads.
The one reader of comma-separated option values, :func:`split_names`, lives here for the same
reason: it is the torch-free bottom of the launch stage, which the CLI, the Python API and the
planner can all import without a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aimbench.devices import parse_device
from aimbench.errors import UserError, at_least, positive


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """How to run cells; none of this changes a cell's numbers, so none of it is in its identity.

    Keyword-only: twelve fields of which several share a type (three paths, three numbers) are
    too easy to pass in the wrong order.
    """

    results_dir: Path = Path("results")
    data_root: Path | None = None
    card_dirs: tuple[Path, ...] = ()
    device: str = "auto"
    batch_size: int = 64
    workers: int = 0
    cache_dir: Path | None = None  # feature cache root; default $AIMBENCH_CACHE or ~/.cache/aimbench
    memory_gb: float | None = None  # attentive heads' device memory budget; default: 90 % of free GPU memory
    checkpoint_every: int = 200  # a resumable probe training state every this many optimizer steps
    checkpoint_seconds: float = 300.0  # or once this long has passed since the previous one, so at most ~5 min of training is lost
    progress_file: bool = False  # report stages to <results>/state/<record stem>.progress.json (for 'aimbench jobs')
    ranks: int = 1  # processes that run ONE cell together (aimbench.probes.ownership): never changes a number
    nodes: int = 1  # machines those ranks span (ranks / nodes on each): what the cost plan times their communication over

    def __post_init__(self) -> None:
        """Out-of-range values fail here, as the options are built, not as a DataLoader or a modulo deep in a cell."""
        parse_device(self.device)  # the spelling only: a Slurm submission's device is the compute node's
        at_least("--batch-size", self.batch_size, 1)
        at_least("--workers", self.workers, 0)
        at_least("the ranks per cell", self.ranks, 1)
        at_least("--nodes", self.nodes, 1)
        if self.ranks % self.nodes:
            raise UserError(f"{self.ranks} ranks per cell do not divide evenly over {self.nodes} nodes")
        at_least("the checkpoint interval", self.checkpoint_every, 1)
        at_least("the checkpoint seconds", self.checkpoint_seconds, 0)
        if self.memory_gb is not None:
            positive("--memory-gb", self.memory_gb)
