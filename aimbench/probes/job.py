"""What every probe kind reads and returns: :class:`ProbeJob` in, :class:`ProbeOutcome` out.

A launcher builds a job from a planned cell and hands it to the cell's kind
(``aimbench.probes.kinds``); the kind never sees where it runs or how its record is written.
This module stays free of torch: planning and the CLI import it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from aimbench.probes.config import ProbeConfig
from aimbench.probes.features.layer_sets import LayerSet
from aimbench.probes.ownership import Shard
from aimbench.probes.timing import Timing

if TYPE_CHECKING:
    from aimbench.adapters.base import Backbone
    from aimbench.cards.task_card import TaskSpec
    from aimbench.data import TaskSplits
    from aimbench.probes.checkpoint import Checkpointing
    from aimbench.probes.results import ProbeResult

WRITE_SHARE = 0.1  # most of a probe's training time its state writes may take

# (stage description, total units) -> advance(units)
StageCallback = Callable[[str, int], Callable[[int], None]]


def no_progress(_: str, __: int) -> Callable[[int], None]:
    return lambda _: None


C = TypeVar("C", bound=ProbeConfig)


@dataclass(frozen=True, kw_only=True)
class ProbeJob:
    """Everything a probe kind reads: the loaded backbone and task, the recipe, and where resume state lives."""

    backbone: Backbone
    task: TaskSpec
    splits: TaskSplits
    config: ProbeConfig | None  # None: a released head (``layers`` names it)
    layers: str  # the layer spec as asked (``all,last``, ``avg:3-5``) or, for released heads, the head's name
    layer_sets: Sequence[LayerSet]  # ``layers`` parsed against the card when the cell was planned
    seed: int
    cache_dir: Path | None = None  # feature cache root (None: the default)
    batch_size: int = 64  # images per backbone forward
    workers: int = 0
    memory_gb: float | None = None  # attentive heads' device memory budget (None: 90 % of free GPU memory)
    checkpoint_every: int = 200  # a resumable training state every this many optimizer steps
    checkpoint_seconds: float = 300.0  # or once this long has passed since the previous one (0: steps only)
    state_path: Path | None = None  # this cell's resumable training state (None: no resume)
    stage: StageCallback = no_progress
    label: str = ""  # what progress descriptions start with (``backbone · task``)
    rank: int = 0  # this process's rank among the ``world`` that runs the cell together (aimbench.probes.ownership)
    world: int = 1

    @property
    def shard(self) -> Shard:
        """This rank's share of the cell: its layer sets, and its rows of every batch in chunks of ``batch_size``."""
        return Shard(self.rank, self.world, self.batch_size)

    def config_of(self, kind: type[C]) -> C:
        """The job's config, as the kind that runs it expects it (a job planned for another kind is a bug)."""
        if not isinstance(self.config, kind):
            raise TypeError(f"a {kind.__name__} job got {type(self.config).__name__}")
        return self.config

    def checkpointing(self, path: Path, identity: str) -> Checkpointing:
        """Where and how often a training run of this job saves its resumable state: every
        ``checkpoint_every`` steps or ``checkpoint_seconds``, whichever comes first, writes taking at
        most a tenth of the training time (a state can be gigabytes)."""
        from aimbench.probes.checkpoint import Checkpointing
        from aimbench.probes.sharding import any_rank, same_on_every_rank

        shard = self.shard
        return Checkpointing(
            path, identity, self.checkpoint_every, seconds=self.checkpoint_seconds, share=WRITE_SHARE,
            agree=None if shard.alone else (lambda flags: any_rank(flags, shard)),
            same_position=None if shard.alone else (lambda done: same_on_every_rank(done, shard)),
        )  # fmt: skip

    def progress(self, what: str, total: int) -> Callable[[int], None]:
        return self.stage(f"{self.label} · {what}" if self.label else what, total)


@dataclass(frozen=True)
class ProbeOutcome:
    """What a probe kind returns: the scores per head and layer set, what its record says about the
    recipe, and where its time went."""

    result: ProbeResult
    config: dict[str, Any]
    timing: Timing = field(default_factory=Timing)
