"""Running a probe kind end to end: the one table of probe kinds and the inputs every kind reads.

``PROBES`` maps a kind (``--probe``) to its config class (what a protocol card resolves into; None
for released heads, which train nothing) and its run function. A launcher builds a :class:`ProbeJob`
and calls :func:`run_probe`; it never reaches into the training code. Adding a probe kind means a
config class in ``probes/config.py``, a run function in its own module, and one line here.

This module stays free of torch (planning and the CLI import it); each run function imports its
training code when it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aimbench.probes.config import AttentiveProbeConfig, KnnProbeConfig, LinearProbeConfig, ProbeConfig
from aimbench.probes.timing import Timing

if TYPE_CHECKING:
    from aimbench.adapters.base import Backbone
    from aimbench.cards.task_card import TaskSpec
    from aimbench.data import TaskSplits
    from aimbench.probes.checkpoint import Checkpointing
    from aimbench.probes.results import ProbeResult

# (stage description, total units) -> advance(units)
StageCallback = Callable[[str, int], Callable[[int], None]]


def no_progress(_: str, __: int) -> Callable[[int], None]:
    return lambda _: None


@dataclass(frozen=True)
class ProbeJob:
    """Everything a probe kind reads: the loaded backbone and task, the recipe, and where resume state lives."""

    backbone: Backbone
    task: TaskSpec
    splits: TaskSplits
    config: ProbeConfig | None  # None: a released head (``layers`` names it)
    layers: str  # the layer spec (``all,last``, ``avg:3-5``) or, for released heads, the head's name
    seed: int
    cache_dir: Path | None = None  # feature cache root (None: the default)
    batch_size: int = 64  # images per backbone forward
    workers: int = 0
    memory_gb: float | None = None  # attentive heads' device memory budget (None: 90 % of free GPU memory)
    checkpoint_every: int = 200  # optimizer steps between resumable training checkpoints
    checkpoint_seconds: float = 0.0  # and at least this long between two of them
    state_path: Path | None = None  # this cell's resumable training state (None: no resume)
    stage: StageCallback = no_progress
    label: str = ""  # what progress descriptions start with (``backbone · task``)

    def checkpointing(self, path: Path, identity: str) -> Checkpointing:
        """Where and how often a training run of this job saves its resumable state."""
        from aimbench.probes.checkpoint import Checkpointing

        return Checkpointing(path, identity, self.checkpoint_every, self.checkpoint_seconds)

    def progress(self, what: str, total: int) -> Callable[[int], None]:
        return self.stage(f"{self.label} · {what}" if self.label else what, total)


@dataclass(frozen=True)
class ProbeOutcome:
    """What a probe kind returns: the scores per head and layer set, what its record says about the
    recipe, and where its time went."""

    result: ProbeResult
    config: dict[str, Any]
    timing: Timing = field(default_factory=Timing)


@dataclass(frozen=True)
class ProbeKind:
    config_class: type[ProbeConfig] | None
    run: Callable[[ProbeJob], ProbeOutcome]


def _run_pooled(job: ProbeJob) -> ProbeOutcome:
    from aimbench.probes.run_pooled import run_pooled

    return run_pooled(job)


def _run_attentive(job: ProbeJob) -> ProbeOutcome:
    from aimbench.probes.run_attentive import run_attentive

    return run_attentive(job)


def _run_released(job: ProbeJob) -> ProbeOutcome:
    from aimbench.probes.run_released import run_released

    return run_released(job)


OFFICIAL = "official"  # released heads, one cell per head ("official:<head>")
PROBES: dict[str, ProbeKind] = {
    "linear": ProbeKind(LinearProbeConfig, _run_pooled),
    "knn": ProbeKind(KnnProbeConfig, _run_pooled),
    "attentive": ProbeKind(AttentiveProbeConfig, _run_attentive),
    OFFICIAL: ProbeKind(None, _run_released),
}


def probe_kind(probe: str) -> str:
    """The kind of a cell's probe label (``official:last`` is kind ``official``)."""
    return probe.partition(":")[0]


def run_probe(probe: str, job: ProbeJob) -> ProbeOutcome:
    """Train (or, for released heads, apply) the probe ``probe`` on ``job`` and score it; selection on val only."""
    return PROBES[probe_kind(probe)].run(job)
